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

# constraints.txt: the versions every test passed with, so that a dependency's new release cannot turn a clean
# clone red overnight (peft 0.22 did); users installing weightdoctor get pyproject.toml's ranges.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,plot]"
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
