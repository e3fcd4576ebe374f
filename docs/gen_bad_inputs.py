"""Regenerate docs/bad_inputs.md from the catalogue in tests/test_bad_inputs.py.

Run: .venv/bin/python docs/gen_bad_inputs.py  (the messages shown are the ones raised now)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_bad_inputs as cat  # noqa: E402

CLI_ROWS = [
    ("cli-unknown-experiment", "cli", "`deeplimits run nonexistent`",
     "exit 2", "unknown experiment 'nonexistent'; valid choices: ... (the registered names)"),
    ("cli-bad-seed", "cli", "`deeplimits run paths --seed abc`",
     "exit 2", "argument --seed: invalid int value: 'abc'"),
    ("cli-unwritable-out", "cli", "`--out` below a regular file",
     "exit 1", "cannot write '...': Not a directory; choose a writable --out folder"),
    ("cli-corrupt-result", "cli", "a truncated `OUT/results/NAME.json`",
     "redone", "result file '...' is unreadable (...); it will be redone"),
    ("cli-full-disk", "cli", "the disk fills while writing results",
     "exit 1", "cannot write '...': No space left on device; the disk is full; free space ..."),
    ("cli-no-gpu", "cli", "`--device cuda` without a GPU",
     "exit 2", "device 'cuda' was asked for but no CUDA GPU is available ...; use --device cpu"),
]  # fmt: skip


def main() -> None:
    lines = [
        "# Bad inputs and the errors they raise",
        "",
        "Every row is a test in `tests/test_bad_inputs.py` (the test also checks that this table",
        "lists exactly those cases). Regenerate with `.venv/bin/python docs/gen_bad_inputs.py`.",
        "All errors derive from `deeplimits.errors.DeeplimitsError` and from `ValueError`,",
        "`TypeError` or `RuntimeError`; CLI usage errors exit with status 2. No case leaves a",
        "partial or corrupt file: results are written atomically (temporary file + rename).",
        "",
        "| id | area | bad input | error | message |",
        "|---|---|---|---|---|",
    ]
    for case in cat.CATALOGUE:
        try:
            case.call()
        except case.error as exc:
            message = str(exc).replace("|", "\\|").replace("\n", " ")
        else:  # pragma: no cover - the test suite catches this
            raise SystemExit(f"{case.id} raised nothing")
        lines.append(
            f"| `{case.id}` | {case.area} | {case.what} | `{case.error.__name__}` | {message} |"
        )
    for row in CLI_ROWS:
        lines.append(f"| `{row[0]}` | {row[1]} | {row[2]} | {row[3]} | {row[4]} |")
    (ROOT / "docs" / "bad_inputs.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
