# The two commands of the README:
#   make demo   set up, then run the server on SQLite with demo data
#   make test   set up, then run every check and the whole test suite (SQLite and PostgreSQL)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint typecheck contracts protos-check ensure-postgres clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bank serve --demo

ensure-postgres:
	@ops/ensure-postgres

protos-check: $(STAMP)
	$(BIN)/python ops/gen_protos.py --check

lint: $(STAMP)
	$(BIN)/ruff check bank services tests ops migrations

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

test: $(STAMP) ensure-postgres protos-check lint typecheck contracts
	$(BIN)/pytest -q -n 2

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
