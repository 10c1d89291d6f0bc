# The two commands: `make run` (local two-region stack, live status) and `make test` (the whole suite).
VENV    ?= .venv
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: run test test-fast bench install system-deps lint demo drill cloud-check flex-template clean

run: install system-deps
	$(VENV)/bin/paynow up

test: lint system-deps  # lint first: a type or style error fails before the 10-minute suite starts
	$(PY) -m pytest

test-fast: install  # no emulator, no process, one worker per core (pytest-xdist): under a minute
	PAYNOW_TEST_TIER=fast $(PY) -m pytest -m "not integration" -q -n auto

demo: install system-deps
	$(VENV)/bin/paynow demo

drill: install system-deps
	$(VENV)/bin/paynow drill all

bench: install system-deps
	$(PY) -m ops.load.bench

cloud-check: install
	$(PY) -m pytest tests/cloud -q

flex-template:  # PROJECT=... [TAG=...] [REGION=...]: image, template spec, launch (see deploy/README.md)
	bash scripts/flex-template.sh all

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dev]'
	touch $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

lint: install  # ruff, then mypy --strict over schemas, ingress, pipeline and ops (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .paynow build *.egg-info
