"""The HTML report: renders stored experiment records; it computes nothing."""

from __future__ import annotations

from deeplimits.report._html import SLIDES, render_html, write_report

__all__ = ["SLIDES", "render_html", "write_report"]
