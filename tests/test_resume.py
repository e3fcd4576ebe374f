"""A tour killed with SIGKILL mid-experiment loses nothing finished (issue: resumable runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# A tour over two tiny experiments: `first` finishes at once, `second` announces itself through a
# marker file and then hangs while HANG is set, so the test can kill it mid-run.
SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from dataclasses import dataclass
    import deeplimits.experiments as ex
    from deeplimits.cli import main
    from deeplimits.experiments import Experiment, ExperimentConfig, Result, Verdict

    LOG = os.environ["RUN_LOG"]

    def make(name, slide, hang):
        class E(Experiment):
            Config = ExperimentConfig
            def run(self, config, progress):
                with open(LOG, "a") as fh:
                    fh.write(name + "\\n")
                if hang and os.environ.get("HANG"):
                    time.sleep(120)
                return Result(numbers={"x": 1}, verdict=Verdict("reproduced", "x is 1."))
        E.name, E.title, E.claim, E.slide = name, name, "claim of " + name, slide
        return E

    ex._MODULES = ()
    ex._REGISTRY = {"first": make("first", 1, False), "second": make("second", 2, True)}
    sys.exit(main(["tour", "--out", sys.argv[1]]))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_tour_reuses_finished_experiments_and_reruns_the_killed_one(tmp_path: Path):
    script = tmp_path / "tour.py"
    script.write_text(SCRIPT)
    out, log = tmp_path / "out", tmp_path / "runs.log"
    env = {**os.environ, "RUN_LOG": str(log), "HANG": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while "second" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the tour never reached the second experiment"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (out / "results" / "first.json").exists()
    assert not (out / "results" / "second.json").exists()
    assert not list((out / "results").glob(".*tmp"))

    env.pop("HANG")
    done = subprocess.run([sys.executable, str(script), str(out)], env=env, check=False)
    assert done.returncode == 0
    assert log.read_text().split() == ["first", "second", "second"]
    report = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in report["experiments"]] == ["first", "second"]
    assert all(e["verdict"]["status"] == "reproduced" for e in report["experiments"])
