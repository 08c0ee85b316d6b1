# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this torch release lies on the build machines' disk; an unpinned torch would
# pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench fixtures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,plot]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/weightdoctor inspect fixtures/example

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check weightdoctor tests fixtures benchmarks scripts

fixtures: $(VENV)/.installed
	$(BIN)/python -m fixtures.build --example fixtures/example

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache bench-data
