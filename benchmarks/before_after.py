"""Two versions of the engine side by side: ``ode_peers.py`` of each, run in turns.

Usage::

    python benchmarks/before_after.py --before 59fcee3 --rounds 2 --threads 1

``--before`` is a commit (exported with ``git archive``), the after side is this checkout. Each
round runs the before and the after ``benchmarks/ode_peers.py`` (each with its own ``src`` on
``PYTHONPATH``), the order alternating between rounds, so drifting load on the machine hits
both. Every figure compared is a median over the rounds of ode_peers' own medians:

- ``time``: deeplimits' solve time, after / before (< 1: the after side is faster);
- ``per eval``: the same per function evaluation (time / nfe), which separates the engine's own
  cost from a change in the number of steps;
- ``vs tdq``: deeplimits' time divided by torchdiffeq's in the same run, after / before (the
  peer as a yardstick against load).

The table goes between ``<!-- BEGIN before_after -->`` markers in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("deeplimits", "deeplimits_PI", "deeplimits_compiled")
TRAIN = ("deeplimits direct", "deeplimits adjoint", "deeplimits seminorm")


def _export(commit: str, dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def _run(tree: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(tree / "benchmarks" / "ode_peers.py"), "--reps", str(args.reps),
           "--out", str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run(cmd, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    key = f"cpu-threads{args.threads}" if args.threads else next(
        p.stem.removeprefix("ode_peers_") for p in out.glob("ode_peers_*.json"))
    return json.loads((out / f"ode_peers_{key}.json").read_text())  # type: ignore[no-any-return]


def _rows(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(case, method/kind, variant) -> medians over runs of time, nfe, time / torchdiffeq."""
    acc: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for rec in runs:
        for c in rec["cases"]:
            for v in VARIANTS:
                if v not in c["times"]:
                    continue
                d = acc.setdefault((c["case"], c["method"], v), {"t": [], "n": [], "r": []})
                d["t"].append(c["times"][v])
                d["n"].append(c["nfe"][v])
                if "torchdiffeq" in c["times"]:
                    d["r"].append(c["times"][v] / c["times"]["torchdiffeq"])
        for c in rec.get("training", []):
            for v in TRAIN:
                if v not in c["times"]:
                    continue
                kind = v.split()[1]
                d = acc.setdefault((c["case"], "train", v), {"t": [], "n": [], "r": []})
                d["t"].append(c["times"][v])
                d["n"].append(c["nfe_fwd"][v] + c["nfe_bwd"][v])
                ref = f"torchdiffeq {kind}"
                if ref in c["times"]:
                    d["r"].append(c["times"][v] / c["times"][ref])
    return {k: {n: statistics.median(x) if x else float("nan") for n, x in d.items()}
            for k, d in acc.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="commit of the before side")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small cases only (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = Path(tmp) / "before"
        before_tree.mkdir()
        _export(args.before, before_tree)
        trees = {"before": before_tree, "after": ROOT}
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for side in order:
                out = Path(tmp) / f"{side}-{r}"
                runs[side].append(_run(trees[side], out, args))
                print(f"round {r + 1}/{args.rounds}: {side} done", flush=True)
    b, a = _rows(runs["before"]), _rows(runs["after"])
    lines = [
        "## Before / after: the engine restructuring", "",
        f"- Machine: {runs['after'][0]['machine']}",
        f"- Command: `python benchmarks/before_after.py {' '.join(sys.argv[1:])}`",
        f"- Before: `{args.before}`; after: `{head}`"
        f"{' (plus uncommitted src changes)' if dirty else ''}; {args.rounds} rounds, the order "
        "alternating; medians over rounds.",
        "- time: after / before of deeplimits' time; per eval: the same per function evaluation; "
        "vs tdq: after / before of deeplimits' time over torchdiffeq's in the same run.", "",
        "| case | method | variant | nfe before / after | time | per eval | vs tdq |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(set(a) & set(b)):
        x, y = b[key], a[key]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {x['n']:.0f} / {y['n']:.0f} | "
            f"{y['t'] / x['t']:.3f} | {(y['t'] / y['n']) / (x['t'] / x['n']):.3f} | "
            f"{y['r'] / x['r']:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    path = Path(args.out)
    begin, end = "<!-- BEGIN before_after -->", "<!-- END before_after -->"
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    new = (old[: old.index(begin)] + block + old[old.index(end) + len(end):]
           if begin in old and end in old else old.rstrip() + "\n\n" + block + "\n")
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(new)
    tmp_path.replace(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
