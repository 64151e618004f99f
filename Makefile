# The two commands a newcomer needs: `make run` and `make test`. Everything else is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test check format migrate bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the service with its dev tools

run: $(STAMP) ## serve on HOST:PORT (embedded Postgres unless DATABASE_URL is set), migrating first
	$(VENV)/bin/tokenrota serve --migrate

migrate: $(STAMP) ## migrate the database to head
	$(VENV)/bin/tokenrota migrate

check: $(STAMP) ## ruff format --check, ruff check, mypy --strict
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict

format: $(STAMP) ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: check ## the whole suite against a real Postgres (what CI runs)
	$(PY) -m pytest -q

.PHONY: fuzz
fuzz: $(STAMP) ## schemathesis over /openapi.json on a local instance: no 5xx, answers as documented
	$(PY) -m fuzz $(FUZZ_ARGS)

bench: $(STAMP) ## the benchmarks in bench/ (numbers go to the README)
	$(PY) -m bench

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .data
