# The whole set-up on a fresh machine: `make demo` or `make test`.
# torch is installed first with a range the CPU wheel satisfies, so pip never reaches
# for a multi-GB CUDA build on a CPU machine (override TORCH_SPEC to choose another).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.5,<2.14
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test chain install install-dev clean

demo: $(VENV)/.installed
	$(BIN)/lmforge quickstart

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

chain: $(VENV)/.installed-dev
	$(BIN)/lmforge chain

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) runs .pytest_cache
