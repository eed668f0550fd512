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

# The side-by-side benchmark against syslog-ng (bench/README.md). Installs the peer when it
# can (root with apt); BENCH_ARGS overrides the defaults, e.g. BENCH_ARGS="--mode latency".
BENCH_ARGS ?= --events 1000000 --connections 4 --runs 3 --peer syslog-ng
bench: $(STAMP)
	@command -v syslog-ng >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq syslog-ng-core syslog-ng-mod-http \
	  >/dev/null; } || echo "bench: syslog-ng is not installed; the peer runs will fail"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
