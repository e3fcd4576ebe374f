"""Time of ``gradient_flow`` with its bound on a ResNet-18-sized network, one CPU thread.

    python benchmarks/diagnostics.py                 # measure, print
    python benchmarks/diagnostics.py --write         # and replace the section in RESULTS.md

The network is the CIFAR ResNet-18 (He et al. 2016: 3x3 stem, four stages of two basic blocks,
64-128-256-512 channels, projection shortcuts, BatchNorm, global average pool, 10 classes;
11.17 M parameters), built here without torchvision, in eval mode, on a batch of 8 of 3x32x32.
One call of ``gradient_flow(model, x)`` measures the per-module table (forward + backward with
hooks) and bounds the Lipschitz constant on the traced graph (``lipschitz_graph``: 20 conv
operator norms by power iteration on the actual input sizes). Reported: the wall time of the first
call (cold: every conv norm computed) and of a second call after a small in-place change of every
weight (warm: power iteration restarts from the cached singular vectors), and of a third call
with unchanged weights (cached norms). Target (issue 18): at most 60 s for the cold call.
``--accuracy`` adds how far the cached norms (power iteration to relative change 1e-6, which
approaches ``σ_max`` from below) are from power iteration to 1e-11 on five of the convolutions.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from deeplimits.diagnostics import count_parameters, gradient_flow, operator_norm
from deeplimits.diagnostics._operator_norm import conv_norm_cached

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- diagnostics:begin -->", "<!-- diagnostics:end -->"


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(self.pool(self.layers(out)), 1))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _accuracy(model: nn.Module) -> list[str]:
    """The cached (tol 1e-6) conv norms against power iteration to tol 1e-11, on five convs."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        conv.register_forward_pre_hook(
            lambda m, a, n=name: shapes.__setitem__(n, tuple(a[0].shape[1:]))
        )
        for name, conv in model.named_modules()
        if isinstance(conv, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    out = [
        "Accuracy of the cached conv norms (power iteration to relative change 1e-6, from below) "
        "against power iteration to 1e-11 (`--accuracy`):",
        "",
        "| conv | input | cached (tol 1e-6) | tol 1e-11 | relative gap |",
        "|---|---|---|---|---|",
    ]
    for name in ("conv1", "layers.0.conv1", "layers.2.conv2", "layers.4.shortcut.0",
                 "layers.7.conv2"):
        conv = model.get_submodule(name)
        cached = conv_norm_cached(conv, shapes[name])
        tight = operator_norm(conv, shapes[name], method="power", tol=1e-11, max_iter=4000)
        out.append(f"| {name} | {'x'.join(map(str, shapes[name]))} | {cached:.8f} | "
                   f"{tight:.8f} | {(tight - cached) / tight:.1e} |")
    return out


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="also compare five convolutions' cached norms (tol 1e-6) with power iteration to "
        "tol 1e-11 (about a minute and a half)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ResNet18().eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    n_params = count_parameters(model)

    t0 = time.perf_counter()
    report = gradient_flow(model, x)
    cold = time.perf_counter() - t0
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.001)
    t0 = time.perf_counter()
    report2 = gradient_flow(model, x)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    gradient_flow(model, x)
    cached = time.perf_counter() - t0

    rows = [
        f"- machine: {_cpu()} ({os.cpu_count()} cores, shared), "
        f"{torch.get_num_threads()} thread, torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        f"- command: `python benchmarks/diagnostics.py {' '.join(sys.argv[1:])}`; "
        f"commit `{_commit()}`; "
        f"{datetime.date.today().isoformat()}",
        f"- model: CIFAR ResNet-18, {n_params / 1e6:.2f} M parameters, eval mode, batch 8 of "
        "3x32x32; "
        f"{len(report.layers)} rows in the table (modules owning parameters)",
        "",
        "| call | wall time (s) | bound | measured ratio | verdict |",
        "|---|---|---|---|---|",
        f"| cold (all conv norms computed) | {cold:.1f} | {report.bound:.4g} | "
        f"{report.measured_ratio:.4g} | {report.verdict} |",
        f"| weights changed in place, warm start | {warm:.1f} | {report2.bound:.4g} | "
        f"{report2.measured_ratio:.4g} | {report2.verdict} |",
        f"| weights unchanged (cached norms) | {cached:.1f} | | | |",
        "",
        f"Target: cold call <= 60 s: {'met' if cold <= 60 else 'missed'}.",
    ]
    if args.accuracy:
        rows += ["", *_accuracy(model)]
    text = "\n".join(rows)
    print(text)
    if args.write:
        section = (
            f"{BEGIN}\n## Diagnostics on a ResNet-18-sized network (issue 18)\n\n"
            "Written by `benchmarks/diagnostics.py` (its output, unedited; a rerun replaces "
            f"this section).\n\n{text}\n{END}"
        )
        old = RESULTS.read_text()
        if BEGIN in old:
            head, rest = old.split(BEGIN, 1)
            new = head + section + rest.split(END, 1)[1]
        else:
            new = old.rstrip("\n") + "\n\n" + section + "\n"
        RESULTS.write_text(new)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
