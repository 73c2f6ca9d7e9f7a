# The two commands that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/config.yaml
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit lint generate clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Migrate the embedded SQLite ledger, apply the example policy, run limiter + exporter.
run: setup
	$(BIN)/agentmeter --config $(CONFIG) db upgrade
	$(BIN)/agentmeter --config $(CONFIG) apply -f examples/policy.yaml
	$(BIN)/agentmeter --config $(CONFIG) serve

# The whole suite: SQLite and the real PostgreSQL, Prometheus and promtool (CI=true: no skips).
test: setup
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# Regenerate committed files: alert rules, dashboard JSON, the chart's copies of both and the
# chart's golden renderings. CI runs this and fails on any diff.
generate: setup
	$(BIN)/python -m agentmeter.alert_rules
	$(BIN)/agentmeter dashboards build --out dashboards/generated
	$(BIN)/python -m agentmeter.chart_sync
	$(BIN)/python -m tests.support.chart_render

clean:
	rm -rf $(VENV) agentmeter.db agentmeter.db-* spool
