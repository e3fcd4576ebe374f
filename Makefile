# Two commands set everything up on a fresh machine:
#   make tour   -> .venv, torch (CPU build), deeplimits[test], then `deeplimits tour` (report/index.html)
#   make test   -> the same set-up, headless Chromium for the report test, then pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deeplimits-installed
PYTEST_ARGS ?=

.PHONY: tour test install browser lint docs bench mutation clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the CPU build on this disk; a bare `torch` requirement would pull a
# multi-GB CUDA build. A torch already in .venv (e.g. a CUDA build you chose) is kept.
# Everything after it accepts the torch already installed.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

tour: $(STAMP)
	$(VENV)/bin/deeplimits tour

# Debian's chromium + chromedriver render the report in a real browser test.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (Debian packages) for the report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The documentation site into site/, strictly: any warning (a broken link or anchor, an
# unresolved reference, a docstring griffe cannot parse) fails the build. The `test` extra
# already holds the `docs` packages; tests/test_docs.py runs the same build.
docs: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tools docs

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/ode_peers.py

# Mutation testing of the numerical core (see docs/testing.md); not part of `make test`.
# Each module runs against its own test modules (table in tools/mutation.py), niced, one at a time:
#   make mutation                                    # every mapped module
#   make mutation MODULES=diagnostics                # a group: diagnostics, ode, experiments
#   make mutation MODULES="diagnostics/_regions.py"  # one module
#   make mutation MODULES=diagnostics/_regions.py MUTATION_ARGS=--recheck   # survivors only
MODULES ?=
MUTATION_ARGS ?=
mutation: $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutation]'
	nice -n 10 $(PY) tools/mutation.py $(MUTATION_ARGS) $(MODULES)

clean:
	rm -rf $(VENV) report site .pytest_cache .mutation
