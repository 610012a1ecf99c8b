# Phoenix95 — the two commands of the README, and their setup.
#   make demo   run the demo on the embedded stack (broker, PostgreSQL, Redis, time-series store)
#   make test   lint, type-check and run the whole test suite against real services
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit integration faults bench setup tsdb clean

setup: $(STAMP) tsdb

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[embedded,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# The time-series store: Debian's victoria-metrics speaks the InfluxDB v2 write API.
tsdb:
	@command -v victoria-metrics >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing victoria-metrics (Debian package)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics) >/dev/null; \
	  else \
	    echo "warning: victoria-metrics is not installed and cannot be installed here; the time-series sink will be off"; \
	  fi; }

demo: setup
	$(BIN)/p95 demo

test: setup lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check phoenix95 tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

faults: setup
	$(BIN)/pytest -q tests/faults

bench: setup
	$(BIN)/p95 bench

clean:
	rm -rf $(VENV) .p95 .pytest_cache .mypy_cache .ruff_cache
