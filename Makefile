# Two commands do all set-up on a fresh clone:
#   make demo   creates .venv, installs ravine, runs the main job
#   make test   creates .venv, installs ravine with test extras (and Debian's chromium), runs the tests
#   make docs   builds the API reference offline into site/ (open site/index.html)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the local CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test docs lint venv browser bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.lab: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[lab]'
	touch $@

$(VENV)/.test: $(VENV)/.lab
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.docs: $(VENV)/.lab
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

venv: $(VENV)/.lab

# Debian's chromium for the Playwright browser tests (never a downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null 2>&1 \
	      || echo "warning: could not install Debian's chromium; browser tests will be skipped"; \
	  else echo "warning: chromium not found and cannot apt-get install it; browser tests will be skipped"; fi; }

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks docs

test: $(VENV)/.test browser
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/python -m pytest -q

# The API reference from the docstrings (mkdocs-material + mkdocstrings); --strict: a docstring
# that does not render fails the build, as it fails `make test`.
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "open site/index.html"

# The peers the benchmarks measure against (PyHessian, loss-landscapes); never imported by ravine.
bench: $(VENV)/.test
	$(BIN)/pip install -q -e '.[bench]'
	@echo "run e.g. $(BIN)/python benchmarks/step.py --quick (see README, Performance)"

demo: $(VENV)/.lab
	$(BIN)/ravine report --quick

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
