"""Shared fixtures: tiny experiments that run in milliseconds, for framework tests; the
``compiles`` marker for tests that run torch.compile; headless Chromium (``driver``) for the
report's and the documentation site's browser tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import pytest

from deeplimits.experiments import (
    Experiment,
    ExperimentConfig,
    Progress,
    Result,
    Table,
    Verdict,
)

#: Warnings torch itself emits while it compiles (torch 2.13), not about this package's code.
_COMPILE_WARNINGS = (
    "ignore:The .grad attribute of a Tensor that is not a leaf",
    "ignore:.*autograd.function.Function'> should not be instantiated",
    "ignore:`torch.jit.script_method` is deprecated",
)


@pytest.fixture(autouse=True)
def _close_figures():
    """Experiments return their figures open (the runner closes them once saved); tests that
    run experiments directly would pile them up across the session until matplotlib's
    more-than-20-figures RuntimeWarning (an error here) fails an unrelated later test. A closed
    figure stays inspectable, so module-scoped results keep working."""
    yield
    plt.close("all")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``compiles`` are slow and ignore torch's own compile-time warnings."""
    for item in items:
        if item.get_closest_marker("compiles") is not None:
            item.add_marker(pytest.mark.slow)
            for text in _COMPILE_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(text))


@dataclass(frozen=True)
class ToyConfig(ExperimentConfig):
    n: int = 3

    @classmethod
    def quick(cls) -> ToyConfig:
        return cls(n=3)

    @classmethod
    def full(cls) -> ToyConfig:
        return cls(n=5)


class ToyExperiment(Experiment[ToyConfig]):
    """Squares 0..n-1; counts its runs so tests can see reuse."""

    name = "toy"
    title = "Toy"
    claim = "Squares are non-negative."
    slide = 1
    Config = ToyConfig
    runs: ClassVar[int] = 0

    def run(self, config: ToyConfig, progress: Progress) -> Result:
        type(self).runs += 1
        squares = []
        with progress.task("square", total=config.n) as task:
            for i in range(config.n):
                squares.append(i * i)
                task.advance()
        fig, ax = plt.subplots()
        ax.plot(squares)
        return Result(
            numbers={"squares": squares, "seed": config.seed},
            verdict=Verdict.from_checks({f"min square {min(squares)} >= 0": min(squares) >= 0}),
            tables=[Table("squares", ("i", "i²"), tuple((i, s) for i, s in enumerate(squares)))],
            figures={"squares": fig},
        )


@pytest.fixture
def toy() -> type[ToyExperiment]:
    ToyExperiment.runs = 0
    return ToyExperiment


@pytest.fixture
def toy_registered(toy: type[ToyExperiment], monkeypatch: pytest.MonkeyPatch):
    """The toy experiment as the only registered one (the real ones are not run)."""
    import deeplimits.experiments as ex

    monkeypatch.setattr(ex, "_MODULES", ())
    monkeypatch.setattr(ex, "_REGISTRY", {"toy": toy})
    return toy


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def driver():
    """Headless Chromium through selenium, with the browser console's log kept."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (`make test` installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield drv
    drv.quit()
