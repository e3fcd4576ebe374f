"""Render experiment records (see :func:`deeplimits.experiments.run_experiment`) as one HTML page.

The page is self-contained: figures are embedded as base64 PNG, the style sheet is inline, there
is no script and nothing is fetched, so it opens offline and from an e-mail attachment.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deeplimits._io import atomic_write_json, atomic_write_text

__all__ = ["SLIDES", "render_html", "write_report"]

# The lecture's sections, in its order: (slide number, heading, the lecture's claim).
SLIDES: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "Continuity",
        "A network is a composition of continuous maps, so f is continuous: it cannot represent a "
        "discontinuous function. Near a decision boundary there is a band where it is wrong or "
        "unsure, and a small perturbation flips the label.",
    ),
    (
        2,
        "More parameters vs deeper models",
        "#params grows as O(L·n²), #paths as O(n^L); depth buys exponentially many linear "
        "regions for a linear number of parameters.",
    ),
    (
        3,
        "Gradient flow",
        "||∇x f|| ≤ ||∇y f|| · Π_l c_l · c_σ with c_l = ||W_lᵀ||_op: c_l < 1 gives vanishing "
        "gradients. Remedies: initialization, constrained optimization, residual connections.",
    ),
    (
        4,
        "ODE networks",
        "A ResNet z_{l+1} = z_l + f(z_l, l) is Euler's method for dz/dl = f(z, l); an ODE network "
        "solves the ODE and gets gradients by the adjoint method in O(1) memory instead of O(L).",
    ),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2.2em}
h3{margin-top:1.6em} blockquote{margin:.6em 0;padding:.4em 1em;border-left:4px solid #8aa;
background:#f4f7f7} table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
td,th{border:1px solid #ccc;padding:.2em .55em;text-align:right} th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left} img{max-width:100%;display:block;margin:.6em 0}
.verdict{padding:.5em 1em;border-radius:6px;margin:.8em 0}
.reproduced{background:#e3f5e1;border:1px solid #7c7} .not-reproduced{background:#fde4e1;
border:1px solid #d77} .inconclusive{background:#fff5d6;border:1px solid #db6}
.failed{background:#fde4e1;border:1px solid #d77}
code,pre{background:#f4f4f4;padding:.1em .3em;border-radius:3px} pre{padding:.6em;overflow-x:auto}
details{margin:.5em 0} .summary td{text-align:left} .muted{color:#666}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if x == 0 or 1e-3 <= abs(x) < 1e6:
            return f"{x:.4g}"
        return f"{x:.3e}"
    if x is None:
        return "–"
    if isinstance(x, (list, tuple)):
        if len(x) > 8:
            return "[" + ", ".join(_fmt(v) for v in x[:8]) + f", … ({len(x)} values)]"
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flatten_numbers(
    numbers: Mapping[str, Any], prefix: str = ""
) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Split numbers into table rows (scalars and lists of scalars, dicts flattened to dotted
    keys) and the rest (lists of records), which the report shows as JSON."""
    rows: list[tuple[str, Any]] = []
    nested: dict[str, Any] = {}
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            sub_rows, sub_nested = _flatten_numbers(value, f"{name}.")
            rows.extend(sub_rows)
            nested.update(sub_nested)
        elif isinstance(value, list) and any(isinstance(v, (Mapping, list)) for v in value):
            nested[name] = value
        else:
            rows.append((name, value))
    return rows, nested


def _figure(out: Path, rel: str) -> str:
    data = (out / rel).read_bytes()
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_esc(Path(rel).stem)}" src="data:image/png;base64,{b64}">'


def _experiment(record: Mapping[str, Any], out: Path) -> str:
    name = record["name"]
    parts = [f'<section class="experiment" id="exp-{_esc(name)}">']
    if "error" in record:
        parts.append(f"<h3>{_esc(record.get('title', name))} <code>{_esc(name)}</code></h3>")
        parts.append(
            f'<div class="verdict failed"><b>failed</b>: {_esc(record["error"])}</div>'
            f"<p>Re-run: <code>{_esc(record.get('command', ''))}</code></p></section>"
        )
        return "".join(parts)
    verdict = record["verdict"]
    status = verdict["status"]
    parts.append(f"<h3>{_esc(record['title'])} <code>{_esc(name)}</code></h3>")
    parts.append(f"<blockquote>{_esc(record['claim'])}</blockquote>")
    parts.append(
        f'<div class="verdict {status.replace(" ", "-")}"><b>{_esc(status)}</b>: '
        f"{_esc(verdict['reason'])}</div>"
    )
    # the slide's sentence (above), then the verdict, then the figures; caveats after them
    for rel in record.get("figures", []):
        parts.append(_figure(out, rel))
    for note in record.get("notes", []):
        parts.append(f'<p class="muted">{_esc(note)}</p>')
    numbers = record.get("numbers", {})
    if numbers:
        scalars, nested = _flatten_numbers(numbers)
        parts.append("<h4>Measured numbers</h4>")
        parts.append(_table(("quantity", "value"), scalars))
        if nested:
            parts.append("<details><summary>Structured numbers (JSON)</summary>")
            parts.append(f"<pre>{_esc(json.dumps(nested, indent=1))}</pre></details>")
    for t in record.get("tables", []):
        parts.append(f"<details><summary>Table: {_esc(t['title'])}</summary>")
        parts.append(_table(t["columns"], t["rows"]) + "</details>")
    parts.append(f"<p>Reproduce: <code>{_esc(record['command'])}</code></p>")
    env = dict(record.get("environment", {}))
    timings = record.get("timings", {})
    parts.append("<details><summary>Config, environment and timings</summary>")
    parts.append(
        f"<pre>{_esc(json.dumps({'config': record['config'], 'environment': env, 'timings': timings}, indent=1))}</pre>"  # noqa: E501
    )
    parts.append("</details></section>")
    return "".join(parts)


def render_html(records: Sequence[Mapping[str, Any]], out: Path, *, title: str) -> str:
    """The report page for ``records`` (figure paths relative to ``out``)."""
    by_slide: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        by_slide.setdefault(int(r.get("slide", 0)), []).append(r)
    summary_rows = [
        (
            r.get("name"),
            r.get("title", ""),
            "failed" if "error" in r else r["verdict"]["status"],
            _fmt(r.get("timings", {}).get("total")),
        )
        for r in records
    ]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        "<p class='muted'>Each claim of the lecture <i>Limitations of Deep Learning</i>, "
        f"measured. "
        f"Written {now}.</p>",
        "<h2 id='summary'>Summary</h2>",
        _table(("experiment", "title", "verdict", "seconds"), summary_rows, "summary"),
    ]
    for number, heading, claim in SLIDES:
        parts.append(f'<section class="claim" id="slide-{number}">')
        parts.append(f"<h2>{number}. {_esc(heading)}</h2><blockquote>{_esc(claim)}</blockquote>")
        exps = by_slide.get(number, [])
        if not exps:
            parts.append("<p class='muted'>No experiment of this section has been run.</p>")
        for r in exps:
            parts.append(_experiment(r, out))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    records: Sequence[Mapping[str, Any]], out: str | Path, *, title: str = "deeplimits report"
) -> Path:
    """Write ``OUT/index.html`` and ``OUT/results.json`` (all records) atomically.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out)
    clean = [{k: v for k, v in r.items() if k not in ("figure_png", "reused")} for r in records]
    atomic_write_json(out / "results.json", {"experiments": clean})
    index = out / "index.html"
    atomic_write_text(index, render_html(clean, out, title=title))
    return index
