# Phoenix95 — the two commands of the README, and their setup.
#   make demo   run the demo on the embedded stack (broker, PostgreSQL, Redis, time-series store)
#   make test   lint (ruff, the import contracts of pyproject.toml), type-check and run the whole
#               test suite against real services
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit integration faults bench profile soak setup tsdb browser clean

setup: $(STAMP) tsdb

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing python3-venv (Debian package)"; rm -rf $(VENV); \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >/dev/null; \
	    $(PYTHON) -m venv $(VENV); \
	  else echo "error: $(PYTHON) -m venv failed; install your Python's venv module" >&2; exit 1; fi; }
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[embedded,dev,bench]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# Debian packages: victoria-metrics (the time-series store; it speaks the InfluxDB v2 write API),
# prometheus (for promtool, which validates the alert rules) and kcat (the baseline `p95 bench`
# measures `p95 tap` against). Installed when missing and we are root.
tsdb:
	@missing=""; \
	command -v victoria-metrics >/dev/null 2>&1 || missing="$$missing victoria-metrics"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (Debian packages)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	      || echo "warning: could not install$$missing"; \
	  else \
	    echo "warning:$$missing not installed and cannot be installed here (the time-series sink is off without victoria-metrics)"; \
	  fi; \
	fi

# Debian's chromium, for the test that screenshots a replay report headless (tests only; the test is
# skipped with the manual command where it cannot be had).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package, for the report screenshot test)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	      || echo "warning: could not install chromium"; \
	  else \
	    echo "warning: chromium not installed; the report screenshot test will be skipped"; \
	  fi; \
	fi

demo: setup
	$(BIN)/p95 demo

test: setup browser lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check phoenix95 tests benchmarks
	$(BIN)/lint-imports

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

# The e2e scenario with py-spy on each stage worker: flame graphs per stage (docs/performance.md).
profile: setup
	$(BIN)/p95 bench --profile --json

# The soak harness (docs/long-runs.md): SOAK=2h by default, SOAK_SPEED multiplies the rates.
SOAK ?= 2h
SOAK_SPEED ?= 1
soak: setup
	$(BIN)/p95 bench --soak $(SOAK) --soak-speed $(SOAK_SPEED) --json
