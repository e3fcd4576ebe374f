"""The README's Python examples run as written and give the results their comments promise.

Each example is run statement by statement. Two kinds of trailing comment are promises checked
right after their statement:

- ``name = ...  # (16, 8)`` or ``# (16, 8) -> (16, 8)``: ``name`` has that shape (the last tuple
  in the comment);
- ``print(...)  # 1024``: the printed line is that literal value.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
_SHAPE = re.compile(r"\((\s*\d+\s*(?:,\s*\d+\s*)*),?\s*\)")


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of its comment (tokenize, so a '#' inside a string is no comment)."""
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _promised_shape(comment: str) -> tuple[int, ...] | None:
    shapes = _SHAPE.findall(comment)
    return tuple(int(s) for s in shapes[-1].split(",") if s.strip()) if shapes else None


def _promised_print(comment: str) -> Any:
    try:
        return ast.literal_eval(comment)
    except (ValueError, SyntaxError):
        return None


def _run_example(
    source: str,
    name: str,
    capsys: pytest.CaptureFixture[str],
    namespace: dict[str, Any] | None = None,
) -> int:
    """Run ``source`` statement by statement, checking its promises; returns how many.

    ``namespace``: the globals to run in (a guide's blocks share one); default a fresh one.
    """
    namespace = {} if namespace is None else namespace
    comments = _comments(source)
    checked = 0
    for stmt in ast.parse(source).body:
        capsys.readouterr()
        exec(compile(ast.Module([stmt], type_ignores=[]), name, "exec"), namespace)
        printed = capsys.readouterr().out
        comment = comments.get(stmt.end_lineno or stmt.lineno, "")
        where = f"{name}, line {stmt.lineno}: {comment!r}"
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and (shape := _promised_shape(comment)) is not None
        ):
            value = namespace[stmt.targets[0].id]
            assert tuple(value.shape) == shape, where
            checked += 1
        elif (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name)
            and stmt.value.func.id == "print"
            and (literal := _promised_print(comment)) is not None
        ):
            assert printed.strip() == str(literal), where
            checked += 1
    return checked


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_gives_the_results_its_comments_promise(index: int, capsys):
    checked = _run_example(BLOCKS[index], f"README.md example {index}", capsys)
    # Every example shows what it computes: a shape or a printed value in a comment.
    assert checked >= 1


def test_a_broken_promise_fails(capsys):
    with pytest.raises(AssertionError, match="1025"):
        _run_example("print(2**10)  # 1025\n", "example", capsys)
    with pytest.raises(AssertionError, match=r"\(3, 2\)"):
        _run_example("import torch\nx = torch.zeros(2, 3)  # (3, 2)\n", "example", capsys)
    assert _run_example("print(2**10)  # 1024\n", "example", capsys) == 1
