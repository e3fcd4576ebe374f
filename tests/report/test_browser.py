"""The report in a real browser: headless Chromium loads index.html, every section and image is
there and the console shows no error. `make test` installs Debian's chromium and chromium-driver;
the ``driver`` fixture is in tests/conftest.py (the documentation site's test uses it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplimits.cli import main
from deeplimits.report import SLIDES

pytestmark = pytest.mark.browser


def test_report_renders_in_chromium_with_all_sections_images_and_no_console_errors(
    driver, tmp_path: Path
):
    # The real tour (all registered experiments) would take minutes here; `paths` is real and fast.
    assert main(["run", "paths", "--out", str(tmp_path)]) == 0
    index = tmp_path / "index.html"
    driver.get(index.resolve().as_uri())
    for number, heading, _ in SLIDES:
        section = driver.find_element("id", f"slide-{number}")
        assert heading in section.text
    assert driver.find_element("id", "exp-paths").is_displayed()
    images = driver.find_elements("tag name", "img")
    assert images, "the report has no figure"
    for img in images:
        width = driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img
        )
        assert width and width > 0, f"image {img.get_attribute('alt')} did not load"
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
