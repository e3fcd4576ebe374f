"""The documentation site (mkdocs.yml, docs/): it builds strictly, every public name has an API
entry with a docstring, every guide's code runs, and the built site works in a browser.

- The strict build is ``mkdocs build --strict`` into a temporary folder, as ``make docs`` runs it
  into ``site/``: any warning (a broken link or anchor, an unresolved ``:::`` reference, a
  docstring griffe cannot parse) fails it. Skipped, saying so, only if mkdocs is not installed
  (the ``test`` and ``docs`` extras install it).
- Guides (docs/guides/*.md and docs/migrating_from_torchdiffeq.md): every ```` ```python ````
  block runs, the blocks of one guide in order in one fresh namespace, statement by statement
  with the README test's promises (a trailing ``# (16, 8)`` is a shape, ``print(...)  # 1024``
  a printed value); every ```` ```sh ```` line is a ``deeplimits ...`` command (optionally
  ``PYTHONPATH=. deeplimits``), run through :func:`deeplimits.cli.main` and expected to exit 0.
  Each guide runs in its own temporary working directory.
- The browser test serves the built site over HTTP (Material's search runs in a web worker,
  which ``file://`` pages may not start), opens pages in headless Chromium, checks the console
  and searches for ``odeint_adjoint``.
"""

from __future__ import annotations

import http.server
import importlib
import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from test_readme import _run_example

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: the pages whose code runs: docs/guides/*.md and the migration guide
GUIDES = [*sorted((DOCS / "guides").glob("*.md")), DOCS / "migrating_from_torchdiffeq.md"]
HAS_MKDOCS = importlib.util.find_spec("mkdocs") is not None
needs_mkdocs = pytest.mark.skipif(
    not HAS_MKDOCS, reason="mkdocs is not installed (pip install -e '.[docs]'; `make test` does)"
)

#: public module -> its API reference page
API_PAGES = {
    "deeplimits.ode": "api/ode.md",
    "deeplimits.diagnostics": "api/diagnostics.md",
    "deeplimits.remedies": "api/remedies.md",
    "deeplimits.constructions": "api/constructions.md",
    "deeplimits.errors": "api/errors.md",
}
_ENTRY = re.compile(r"^::: ([\w.]+)\s*$", re.M)
_BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.M | re.S)


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built strictly from the repository's mkdocs.yml (once for this module)."""
    if not HAS_MKDOCS:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'; `make test` does)")
    out = tmp_path_factory.mktemp("site")
    proc = _mkdocs_build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


# --- the strict build ------------------------------------------------------------------------


def test_site_builds_strictly_with_every_page_of_the_nav(site: Path):
    for page in ("index", "guides/getting_started", "guides/lecture", "guides/neural_odes",
                 "guides/diagnosing", "migrating_from_torchdiffeq", "bad_inputs", "api/ode",
                 "api/diagnostics", "api/remedies", "api/constructions", "api/errors", "api/cli",
                 "design/ode", "benchmarks", "testing"):  # fmt: skip
        assert (site / f"{page}.html").is_file(), page


@needs_mkdocs
def test_every_docs_page_is_in_the_nav():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: Any) -> Iterator[str]:
        for item in nav:
            for value in item.values():
                yield from ([value] if isinstance(value, str) else pages(value))

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == in_nav


@needs_mkdocs
def test_strict_build_fails_on_a_broken_link_anchor_or_reference(tmp_path: Path):
    """The validation settings of mkdocs.yml turn each of these into a failing warning."""
    import yaml

    real = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    cases = {  # page body -> what the failing build's log names
        "[gone](missing.md)": "missing.md",
        "[gone](#no-such-heading)": "no-such-heading",
        "::: deeplimits.ode.no_such_function": "no_such_function",
    }
    for body, named in cases.items():
        (docs / "index.md").write_text(f"# Page\n\n{body}\n", encoding="utf-8")
        config = {
            "site_name": "t",
            "docs_dir": str(docs),
            "strict": True,
            "validation": real["validation"],
            "plugins": ["search", next(p for p in real["plugins"] if "mkdocstrings" in p)],
        }
        (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        proc = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
        assert proc.returncode != 0, body
        assert named in proc.stderr, (body, proc.stderr)


def test_cli_reference_shows_every_subcommands_help(site: Path, capsys):
    from deeplimits.cli import main

    page = (site / "api" / "cli.html").read_text(encoding="utf-8")
    for cmd in ("list", "run", "tour", "report", "diagnose"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        usage = capsys.readouterr().out.splitlines()[0]  # "usage: deeplimits run [-h] ..."
        assert f"deeplimits {cmd}" in page
        assert usage.split("[-h]")[0].strip() in page


# --- every public name: an entry and a docstring -----------------------------------------------


def _entries(page: str) -> set[str]:
    return set(_ENTRY.findall((DOCS / page).read_text(encoding="utf-8")))


def _missing_entries(module: str, page: str) -> tuple[set[str], set[str]]:
    """(public names without an entry, entries that are not public names) of ``module``."""
    public = {f"{module}.{name}" for name in importlib.import_module(module).__all__}
    entries = _entries(page) - {module}
    return public - entries, entries - public


@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_every_public_name_has_an_api_entry(module: str):
    undocumented, stale = _missing_entries(module, API_PAGES[module])
    assert undocumented == set(), f"add '::: NAME' to docs/{API_PAGES[module]}"
    assert stale == set(), f"not in {module}.__all__: remove from docs/{API_PAGES[module]}"
    assert module in _entries(API_PAGES[module])  # the module docstring heads the page


def test_a_public_name_without_an_entry_is_found(monkeypatch: pytest.MonkeyPatch):
    import deeplimits.constructions as mod

    monkeypatch.setattr(mod, "__all__", [*mod.__all__, "brand_new"])
    assert _missing_entries("deeplimits.constructions", API_PAGES["deeplimits.constructions"]) == (
        {"deeplimits.constructions.brand_new"},
        set(),
    )


@needs_mkdocs
@pytest.mark.parametrize("module", sorted(API_PAGES))
def test_every_public_name_has_a_docstring_as_the_site_reads_it(module: str):
    """griffe (what mkdocstrings renders from) finds a docstring for each public name."""
    import griffe

    package = griffe.load(module, search_paths=[str(ROOT / "src")], resolve_aliases=True)
    assert package.docstring is not None and package.docstring.value.strip(), module
    without = [
        name
        for name in importlib.import_module(module).__all__
        if not ((doc := package[name].docstring) and doc.value.strip())
    ]
    assert without == []


# --- the guides' code ----------------------------------------------------------------------------


def _blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, line number of the block) of each python/sh block of a guide."""
    text = path.read_text(encoding="utf-8")
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _BLOCK.finditer(text)
    ]


def _run_shell(code: str, where: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplimits.cli import main

    for line in filter(None, (ln.strip() for ln in code.splitlines())):
        argv = shlex.split(line)
        with monkeypatch.context() as m:
            if argv[0] == "PYTHONPATH=.":
                m.syspath_prepend(str(cwd))
                argv = argv[1:]
            assert argv[0] == "deeplimits", f"{where}: only `deeplimits` commands run: {line}"
            assert main(argv[1:]) == 0, f"{where}: {line}"


def test_every_guide_has_code():
    assert {p.stem for p in GUIDES} == {
        "getting_started", "lecture", "neural_odes", "diagnosing", "migrating_from_torchdiffeq"
    }
    for guide in GUIDES:
        assert any(lang == "python" for lang, _, _ in _blocks(guide)), guide.name


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_code_runs_and_gives_what_its_comments_promise(
    guide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPLIMITS_NUM_THREADS", "1")
    namespace: dict[str, Any] = {"__name__": f"guide_{guide.stem}"}
    for lang, code, line in _blocks(guide):
        where = f"{guide.relative_to(ROOT)}, block at line {line}"
        if lang == "python":
            _run_example(code, where, capsys, namespace)
        else:
            _run_shell(code, where, tmp_path, monkeypatch)


def test_a_guide_shell_line_that_is_not_a_deeplimits_command_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(AssertionError, match="only `deeplimits` commands"):
        _run_shell("rm -rf /tmp/x\n", "guide", tmp_path, monkeypatch)


# --- in a browser ---------------------------------------------------------------------------


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    """The built site on a local HTTP server at a free port; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.browser
def test_site_opens_in_chromium_without_console_errors_and_search_finds_odeint_adjoint(
    driver, served: str
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    for page, heading in (("index.html", "deeplimits"), ("api/ode.html", "deeplimits.ode"),
                          ("guides/neural_odes.html", "Neural ODEs")):  # fmt: skip
        driver.get(f"{served}/{page}")
        assert heading in driver.find_element(By.TAG_NAME, "h1").text, page
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], page

    driver.get(f"{served}/index.html?q=odeint_adjoint")  # Material opens search with ?q=
    results = WebDriverWait(driver, 30).until(
        ec.presence_of_all_elements_located((By.CSS_SELECTOR, ".md-search-result__item a"))
    )
    found = [urlsplit(r.get_attribute("href")) for r in results]  # Material adds ?h=QUERY
    assert any(
        u.path == "/api/ode.html" and u.fragment == "deeplimits.ode.odeint_adjoint" for u in found
    ), [u.geturl() for u in found]
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
