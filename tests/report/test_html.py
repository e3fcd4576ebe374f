from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from deeplimits.experiments import run_experiment
from deeplimits.report import SLIDES, write_report


def test_report_has_every_section_in_lecture_order_and_embeds_figures(toy, tmp_path: Path):
    record = run_experiment(toy, out=tmp_path)
    index = write_report([record], tmp_path)
    page = index.read_text()
    positions = [page.index(f'id="slide-{n}"') for n, _, _ in SLIDES]
    assert positions == sorted(positions)
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 1 and base64.b64decode(imgs[0])[:4] == b"\x89PNG"
    assert "deeplimits run toy --preset quick --seed 0" in page
    assert "reproduced" in page and "Squares are non-negative." in page
    assert "http://" not in page and "https://" not in page  # nothing fetched
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["experiments"][0]["numbers"]["squares"] == [0, 1, 4]
    assert "reused" not in data["experiments"][0]


def test_report_escapes_html_in_numbers_and_claims(toy, tmp_path: Path):
    record = run_experiment(toy, out=tmp_path)
    record["claim"] = "<script>alert(1)</script>"
    page = write_report([record], tmp_path).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_nested_numbers_are_flattened_and_records_kept_as_json(toy, tmp_path: Path):
    record = run_experiment(toy, out=tmp_path)
    record["numbers"] = {"a": {"b": 1.5, "c": [1, 2]}, "fits": [{"w": 4, "err": 0.5}]}
    page = write_report([record], tmp_path).read_text()
    assert "<td>a.b</td><td>1.5</td>" in page and "<td>a.c</td>" in page
    assert "Structured numbers (JSON)" in page and "&quot;err&quot;: 0.5" in page


def test_each_experiment_reads_claim_then_verdict_then_figures_then_notes(toy, tmp_path: Path):
    record = run_experiment(toy, out=tmp_path)
    record["notes"] = ["A caveat."]
    page = write_report([record], tmp_path).read_text()
    section = page[page.index('id="exp-toy"') :]
    order = [
        section.index("Squares are non-negative."),
        section.index('class="verdict reproduced"'),
        section.index("<img"),
        section.index("A caveat."),
    ]
    assert order == sorted(order)
