"""``deeplimits diagnose MODULE:FACTORY --input-shape 1,784``: gradient flow of any model.

The factory is imported (the current folder is on the import path, as for uvicorn or pytest),
called with no arguments and must return an ``nn.Module``; the model is put in eval mode (or
training mode with ``--train-mode``), run on a standard-normal batch of ``--input-shape`` (the
first number is the batch size) and the per-module table of
:func:`deeplimits.diagnostics.gradient_flow`, its bound (or why there is none) and its verdict are
printed, or the whole report as JSON with ``--json``. ``--loss MODULE:FUNCTION`` names the loss
(output → scalar) for models returning tuples or dicts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from deeplimits.errors import InvalidArgumentError

__all__ = [
    "add_diagnose_parser",
    "load_factory",
    "load_loss",
    "parse_input_shape",
    "run_diagnose",
]


def add_diagnose_parser(subparsers: Any) -> None:
    """Add the ``diagnose`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "diagnose",
        help="gradient flow of a model: per-layer norms, the slide-3 bound and a verdict",
        description=(
            "Build a model with MODULE:FACTORY (a function taking no arguments and returning a "
            "torch.nn.Module), run it on a standard-normal batch of --input-shape, and print the "
            "per-layer gradient-flow table and the verdict (vanishing / exploding / healthy)."
        ),
    )
    p.add_argument("target", metavar="MODULE:FACTORY", help="e.g. mypkg.models:make_mlp")
    p.add_argument(
        "--input-shape",
        required=True,
        help="comma-separated input shape including the batch size, e.g. 1,784 or 8,3,32,32",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the input batch (default 0)")
    p.add_argument(
        "--train-mode",
        action="store_true",
        help="measure the model in training mode (default: eval mode; train-mode BatchNorm "
        "couples the samples and has no Lipschitz bound)",
    )
    p.add_argument(
        "--loss",
        metavar="MODULE:FUNCTION",
        help="a function taking the model's output (a tensor, tuple or dict) and returning a "
        "scalar loss (default: a random linear functional of the output)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run_diagnose)


class UsageError(InvalidArgumentError):
    """A bad command line; the message says what to fix."""


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1,784"`` → ``(1, 784)``; at least two positive ints (batch size first)."""
    parts = [t.strip() for t in str(text).split(",")]
    try:
        shape = tuple(int(t) for t in parts)
    except ValueError:
        raise UsageError(
            f"--input-shape {text!r} is not a comma-separated list of integers; "
            "give e.g. --input-shape 1,784"
        ) from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise UsageError(
            f"--input-shape {text!r} must have a batch size and at least one feature "
            "dimension, all >= 1; give e.g. --input-shape 1,784"
        )
    return shape


def _import_attr(target: str, what: str) -> Any:
    """Import ``MODULE:ATTR`` with the current folder on the import path (as uvicorn, gunicorn
    and pytest do), so that ``mymodels:make_net`` works from the folder holding mymodels.py."""
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"{what} {target!r} is not of the form MODULE:NAME; give e.g. mypkg.models:make_mlp"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"cannot import module {module_name!r} ({exc}); check the name, and run from the "
            "folder that holds it or put that folder on PYTHONPATH"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_loss(target: str) -> Any:
    """Import ``MODULE:FUNCTION`` for ``--loss``; it must be callable."""
    fn = _import_attr(target, "loss")
    if not callable(fn):
        raise UsageError(f"--loss {target} is not callable; give a function output -> scalar")
    return fn


def load_factory(target: str) -> Any:
    """Import ``MODULE:FACTORY``, call the factory with no arguments, return the nn.Module."""
    from torch import nn

    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"model {target!r} is not of the form MODULE:FACTORY; give e.g. mypkg.models:make_mlp"
        )
    obj = _import_attr(target, "model")
    if isinstance(obj, nn.Module):
        raise UsageError(
            f"{target} is already an nn.Module instance; give a factory function that returns one"
        )
    if not callable(obj):
        raise UsageError(f"{target} is not callable; give a factory function returning a model")
    try:
        model = obj()
    except TypeError as exc:
        raise UsageError(f"calling {target}() with no arguments failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"{target}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def run_diagnose(args: argparse.Namespace) -> int:
    """Run the subcommand; 0 on success, 2 on a usage error (message on stderr)."""
    import torch
    from rich.console import Console

    from deeplimits.diagnostics import gradient_flow
    from deeplimits.errors import DeeplimitsError

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        shape = parse_input_shape(args.input_shape)
        model = load_factory(args.target)
        loss_fn = None if getattr(args, "loss", None) is None else load_loss(args.loss)
    except UsageError as exc:
        err.print(f"deeplimits diagnose: error: {exc}", markup=False)
        return 2
    gen = torch.Generator().manual_seed(int(args.seed))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    try:
        model.train(bool(getattr(args, "train_mode", False)))
        report = gradient_flow(model, x, seed=int(args.seed), loss_fn=loss_fn)
    except DeeplimitsError as exc:
        err.print(f"deeplimits diagnose: error: {exc}", markup=False)
        return 2
    except RuntimeError as exc:  # e.g. the input shape does not fit the model
        err.print(
            f"deeplimits diagnose: error: the model failed on an input of shape {shape}: {exc}; "
            "check --input-shape",
            markup=False,
        )
        return 2
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return 0
    # Not a terminal (a pipe, a file): wide enough that no number is cut short.
    out = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 140)
    out.print(report.table())
    out.print(report.summary(), markup=False, soft_wrap=True)  # one line per quantity
    return 0
