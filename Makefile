# Set-up and entry points. Everything installs into .venv (Python 3.12+).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON312 := $(shell bash scripts/find_python.sh)

.PHONY: install install-test demo test test-slow benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e ".[test]"
	bash scripts/install_browser.sh
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/toolkit demo

test: install-test
	$(VENV)/bin/pytest -n 2 -q

test-slow: install-test
	$(VENV)/bin/pytest -q -m slow

benchmarks: install-test
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_output .pytest_cache
