"""The ``deeplimits`` command line: a thin face over experiments, report and diagnostics.

Exit status: 0 success; 1 an experiment or a write failed; 2 usage error (unknown experiment,
bad preset, unavailable device...); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn
from rich.progress import Progress as RichProgressBar
from rich.table import Table as RichTable

from deeplimits import __version__
from deeplimits._cli_diagnose import add_diagnose_parser
from deeplimits.errors import DeeplimitsError, InvalidArgumentError, UnknownNameError

__all__ = ["main"]

_console = Console(stderr=True, soft_wrap=True)


class _RichTask:
    def __init__(self, bar: RichProgressBar, task_id: Any) -> None:
        self._bar, self._id = bar, task_id

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._id, n)


class RichProgress:
    """:class:`deeplimits.experiments.Progress` drawn with rich on stderr."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[_RichTask]:
        with RichProgressBar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.elapsed:.1f}s"),
            console=_console,
            transient=True,
        ) as bar:
            task_id = bar.add_task(f"{self.prefix}{description}", total=total)
            yield _RichTask(bar, task_id)

    def log(self, message: str) -> None:
        _console.print(f"[yellow]{self.prefix}{message}[/]")


def _usage_error(message: str) -> int:
    _console.print(f"[red]deeplimits: error:[/] {message}")
    return 2


def _stored_records(out: Path) -> list[dict[str, Any]]:
    from deeplimits.experiments import list_experiments
    from deeplimits.experiments._runner import load_record

    records = []
    for cls in list_experiments():
        path = out / "results" / f"{cls.name}.json"
        if path.is_file():
            try:
                records.append(load_record(path))
            except DeeplimitsError:
                continue
    return records


def _print_verdict(record: dict[str, Any]) -> None:
    if "error" in record:
        _console.print(f"[red]{record['name']}: failed[/]: {record['error']}")
        return
    status = record["verdict"]["status"]
    color = {"reproduced": "green", "not reproduced": "red"}.get(status, "yellow")
    reused = " (reused)" if record.get("reused") else ""
    total = record.get("timings", {}).get("total", float("nan"))
    _console.print(
        f"[bold]{record['name']}[/]{reused}: [{color}]{status}[/] in {total:.1f}s — "
        f"{record['verdict']['reason']}"
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from deeplimits.experiments import list_experiments

    table = RichTable(title="deeplimits experiments (lecture order)")
    for col in ("name", "slide", "title", "claim"):
        table.add_column(col)
    for cls in list_experiments():
        table.add_row(cls.name, str(cls.slide), cls.title, cls.claim)
    Console().print(table)
    return 0


def _run_one(
    name: str, *, preset: str, seed: int | None, device: str | None, out: Path, force: bool
) -> dict[str, Any]:
    from deeplimits.experiments import run_experiment
    from deeplimits.experiments._runner import command_for

    try:
        return run_experiment(
            name,
            preset=preset,
            seed=seed,
            device=device,
            out=out,
            force=force,
            progress=RichProgress(prefix=f"{name}: "),
        )
    except (InvalidArgumentError, KeyboardInterrupt):
        raise
    except Exception as exc:  # an experiment's own failure must not sink the others
        _console.print(traceback.format_exc(), markup=False, highlight=False)
        from deeplimits.experiments import get_experiment

        cls = get_experiment(name)
        return {
            "name": name,
            "title": cls.title,
            "slide": cls.slide,
            "error": f"{type(exc).__name__}: {exc}",
            "command": command_for(name, preset, seed or 0, device or "cpu"),
        }


def _cmd_run(args: argparse.Namespace) -> int:
    from deeplimits.experiments import get_experiment
    from deeplimits.report import write_report

    try:
        get_experiment(args.name)
    except UnknownNameError as exc:
        return _usage_error(str(exc))
    out = Path(args.out)
    record = _run_one(
        args.name, preset=args.preset, seed=args.seed, device=args.device, out=out, force=True
    )
    _print_verdict(record)
    records = _stored_records(out)
    if "error" in record:
        records.append(record)
    index = write_report(records, out)
    _console.print(f"report: {index}")
    return 1 if "error" in record else 0


def _cmd_tour(args: argparse.Namespace) -> int:
    from deeplimits.experiments import TOUR_BUDGET_S, list_experiments
    from deeplimits.report import write_report

    out = Path(args.out)
    records = []
    experiments = list_experiments()
    start = time.perf_counter()
    for i, cls in enumerate(experiments, 1):
        _console.print(
            f"[{i}/{len(experiments)}] {cls.name} (--preset {args.preset}), "
            f"{time.perf_counter() - start:.0f}s into the tour",
            markup=False,
        )
        record = _run_one(
            cls.name,
            preset=args.preset,
            seed=args.seed,
            device=args.device,
            out=out,
            force=args.force,
        )
        _print_verdict(record)
        records.append(record)
    wall = time.perf_counter() - start
    budget = TOUR_BUDGET_S[args.preset]
    reused = sum(1 for r in records if r.get("reused"))
    _console.print(
        f"tour: {len(records)} experiments ({reused} reused) in {wall:.0f}s; budget of "
        f"--preset {args.preset} on 2 CPU cores: {budget:.0f}s"
        + (" (over budget)" if wall > budget else ""),
        style="yellow" if wall > budget else None,
        markup=False,
    )
    index = write_report(records, out)
    _console.print(f"report: {index}")
    return 1 if any("error" in r for r in records) else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from deeplimits.report import write_report

    out = Path(args.out)
    records = _stored_records(out)
    if not records:
        return _usage_error(f"no stored results in {str(out / 'results')!r}; run `deeplimits tour`")
    _console.print(f"report: {write_report(records, out)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from deeplimits.experiments import PRESETS

    parser = argparse.ArgumentParser(
        prog="deeplimits",
        description="The lecture 'Limitations of Deep Learning' as measured experiments.",
    )
    parser.add_argument("--version", action="version", version=f"deeplimits {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list the experiments", description="List the experiments.")
    p.set_defaults(func=_cmd_list)

    def common(p: argparse.ArgumentParser, *, out_help: str) -> None:
        p.add_argument("--preset", choices=PRESETS, default="quick", help="config preset")
        p.add_argument("--seed", type=int, default=None, help="random seed (default: preset's)")
        p.add_argument("--out", default="report", help=out_help)
        p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")

    p = sub.add_parser(
        "run",
        help="run one experiment",
        description="Run one experiment, store OUT/results/NAME.json and its figures, "
        "and rewrite OUT/index.html.",
    )
    p.add_argument("name", help="experiment name (see `deeplimits list`)")
    common(p, out_help="output folder (default: report)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "tour",
        help="run every experiment and write the report",
        description="Run every experiment in the lecture's order, reusing finished results whose "
        "config and package version match, and write OUT/index.html and OUT/results.json.",
    )
    common(p, out_help="output folder (default: report)")
    p.add_argument("--force", action="store_true", help="redo finished experiments")
    p.set_defaults(func=_cmd_tour)

    p = sub.add_parser(
        "report",
        help="rewrite the report from stored results",
        description="Rewrite OUT/index.html and OUT/results.json from OUT/results/*.json.",
    )
    p.add_argument("--out", default="report", help="output folder (default: report)")
    p.set_defaults(func=_cmd_report)

    add_diagnose_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deeplimits`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidArgumentError as exc:
        return _usage_error(str(exc))
    except DeeplimitsError as exc:
        _console.print(f"[red]deeplimits: error:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        _console.print("[yellow]interrupted; finished experiments are kept[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
