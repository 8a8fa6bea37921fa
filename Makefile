# Set-up and entry points. Everything installs into .venv (Python 3.12+).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON312 := $(shell bash scripts/find_python.sh)

.PHONY: install install-test demo test test-slow benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e ".[test]"
	bash scripts/install_browser.sh
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/toolkit demo --overwrite

# Notebooks run under nbval in fast mode; --dist loadfile keeps each notebook's cells on one worker.
test: install-test
	TOOLKIT_NOTEBOOK_FAST=1 $(VENV)/bin/pytest -n 2 --dist loadfile -q --durations=20 tests notebooks --nbval-lax --nbval-current-env

test-slow: install-test
	$(VENV)/bin/pytest -q -m slow

benchmarks: install-test
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_output .pytest_cache
