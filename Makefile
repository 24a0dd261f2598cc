# kubedetect: `make demo` runs the whole thing locally; `make test` checks it.
# Every target installs what it needs first (into .venv, with the pins of constraints.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output
DATA ?=
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help setup demo test bench lint constraints clean

help:
	@echo "make demo   - synthetic data (or DATA=path/to/voc) through the whole pipeline, locally"
	@echo "make test   - the test suite"
	@echo "make bench  - benchmarks; results in docs/BENCHMARKS.md"
	@echo "make lint   - ruff, hadolint, shellcheck"
	@echo "make setup  - create $(VENV) with every dependency pinned by constraints.txt"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt -e ".[all,dev]"
	touch $@

demo: setup
	$(PY) -m pipelines.demo --out $(DEMO_DIR) $(if $(DATA),--data $(DATA))

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check kubedetect serving components pipelines tests bench
	$(VENV)/bin/ruff format --check kubedetect serving components pipelines tests bench

constraints: setup
	@echo "# The one set of pins every install uses: pip install -c constraints.txt ..." > constraints.txt.new
	@echo "# Resolved on Python 3.11 (see ../shared/ENVIRONMENT.md). Regenerate with: make constraints" >> constraints.txt.new
	$(PIP) freeze --exclude-editable | grep -v -E '^(pip|setuptools|wheel)==' >> constraints.txt.new
	echo "tensorflow==2.21.0" >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
