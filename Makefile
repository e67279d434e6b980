# The whole set-up on a fresh machine: `make demo` or `make test`.
# torch is installed first with a range the CPU wheel satisfies, so pip never reaches
# for a multi-GB CUDA build on a CPU machine (override TORCH_SPEC to choose another).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.5,<2.14
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test chain install install-dev bubblewrap clean

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
	@command -v bwrap >/dev/null || $(MAKE) --no-print-directory bubblewrap
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

# The terminal-task sandbox runs commands inside bubblewrap; as root with apt, install it, else say how.
bubblewrap:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; }; \
	else echo "note: install bubblewrap (bwrap) with your package manager to run terminal tasks in a sandbox"; fi

clean:
	rm -rf $(VENV) runs .pytest_cache
