# fedcrm: every target installs what it needs into .venv first.
#   make demo   - install, split the bundled lead-scoring data into eu/us/apac, run the federated job
#   make test   - install (with test extras) and run the whole test suite
#   make docs   - regenerate docs/reference/ from the code
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
USE_CASE ?= lead-scoring
export PREFECT_SERVER_ANALYTICS_ENABLED = false
export MLFLOW_DISABLE_TELEMETRY = true
export GX_ANALYTICS_ENABLED = false

.PHONY: install install-dev chromium demo test test-fast test-e2e expectations docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned on its own: pip then takes the local CPU wheel instead of a multi-GB CUDA build.
$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# The compliance report's end-to-end test opens it in headless Chromium (Debian package `chromium`,
# about 20 s to install). Installed here when missing and we are root; otherwise this only warns, and
# that test fails saying how to install it.
chromium:
	@command -v chromium >/dev/null 2>&1 \
	|| { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	|| echo "warning: chromium is missing and could not be installed (needs root and apt-get): tests/e2e/test_compliance_report.py will fail; install it with: sudo apt-get install -y chromium" >&2

demo: install
	$(BIN)/fedcrm data split --use-case $(USE_CASE)
	$(BIN)/fedcrm run --use-case $(USE_CASE) --json-summary .fedcrm/summary-$(USE_CASE).json

test: install-dev chromium
	$(BIN)/python -m pytest

test-fast: install-dev
	$(BIN)/python -m pytest -m "not e2e"

test-e2e: install-dev chromium
	$(BIN)/python -m pytest -m e2e

expectations: install
	$(BIN)/fedcrm expectations generate --use-case lead-scoring
	$(BIN)/fedcrm expectations generate --use-case churn

# Reference pages generated from the code (configuration schema, CLI); a test fails when they are stale.
docs: install
	$(BIN)/python -m cli.reference docs/reference

clean:
	rm -rf .fedcrm .pytest_cache .hypothesis
