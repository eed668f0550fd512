# Two commands a fresh machine needs: `make run` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,speed]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/forwarder run $(ARGS)

test: $(STAMP)
	./.ci/system-deps
	$(BIN)/ruff check forwarder tests bench
	$(BIN)/ruff format --check forwarder tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check forwarder tests bench
	$(BIN)/ruff format --check forwarder tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
