"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks``).

- The command-line reference (docs/api/cli.md) from the parser's own ``--help``: the page holds
  the marker ``<!-- deeplimits-cli-help -->``; at build time it is replaced by the help of
  ``deeplimits`` and of each subcommand, in the parser's order, at a fixed width of 100 columns
  (argparse reads ``COLUMNS``), so the page is the same on every machine and cannot drift from
  the code. Nothing is executed besides building the parser and printing its help.
- The docstrings' Sphinx roles (``:func:`odeint```), which mkdocstrings' Google-style renderer
  shows literally, lose their ``:func:`` prefix and keep the code span.
"""

from __future__ import annotations

import argparse
import io
import os
import re
from contextlib import redirect_stdout
from typing import Any

MARKER = "<!-- deeplimits-cli-help -->"
WIDTH = "100"


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        buf = io.StringIO()
        with redirect_stdout(buf):
            parser.print_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return buf.getvalue().rstrip()


def cli_reference() -> str:
    """The Markdown of every command's ``--help``: ``deeplimits`` first, then each subcommand."""
    from deeplimits.cli import _parser

    parser = _parser()
    parts = ["## `deeplimits`", "", "```text", _help(parser), "```"]
    subcommands = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name, sub in subcommands.choices.items():
        parts += ["", f"## `deeplimits {name}`", "", "```text", _help(sub), "```"]
    return "\n".join(parts) + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())


_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    return _ROLE.sub("", html)
