# The commands a newcomer needs: `make run`, `make test` (what CI runs) and `make test-quick`
# (the inner loop). Everything else is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two installs into one venv: what serving needs (make run), and that plus the dev tools.
SERVER_STAMP := $(VENV)/.server-stamp
DEV_STAMP := $(VENV)/.dev-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test test-quick check format migrate bench soak clean dist screenshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# uv installs what pip would, from the same index, in a fraction of the time (it resolves and
# downloads in parallel). It is fetched into the venv first; where it cannot be had, pip installs.
UV := $(VENV)/bin/uv
# $(call pip_install,PYTHON,REQUIREMENTS): install into the environment of PYTHON with uv, or
# with pip if uv is missing or fails (pip reads the machine's pip.conf, uv does not).
pip_install = if [ -x $(UV) ] && $(UV) pip install --python $(1) $(2); then :; \
	else $(PY) -m pip --disable-pip-version-check --python $(1) install $(2); fi

$(PY):
	@echo "==> creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	-$(PY) -m pip install --disable-pip-version-check --quiet uv

$(SERVER_STAMP): pyproject.toml | $(PY)
	@echo "==> installing tokenrota[server] into $(VENV): what serving needs"
	$(call pip_install,$(PY),-e '.[server]')
	touch $@

# The dev extra includes the server: a dev install serves too.
$(DEV_STAMP): pyproject.toml | $(PY)
	@echo "==> installing tokenrota[dev] into $(VENV): the server, test and lint tools"
	$(call pip_install,$(PY),-e '.[dev]')
	touch $@ $(SERVER_STAMP)

install: $(DEV_STAMP) ## create .venv and install the service with its dev tools

run: $(SERVER_STAMP) ## serve on HOST:PORT (embedded Postgres unless DATABASE_URL is set), migrating first
	@echo "==> migrating and serving; Ctrl-C stops the server and its embedded PostgreSQL"
	$(VENV)/bin/tokenrota serve --migrate

migrate: $(SERVER_STAMP) ## migrate the database to head
	$(VENV)/bin/tokenrota migrate

CHECK := $(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check . && $(VENV)/bin/mypy --strict
check: $(DEV_STAMP) ## ruff format --check, ruff check, mypy --strict
	$(CHECK)

format: $(DEV_STAMP) ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two processes (pytest-xdist), each with its own template database and pool of databases. A
# file whose module fixtures build something costly (a wheel, venvs) names an xdist_group: its
# tests stay in one worker, which builds it once.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

# make check runs beside the suite, not before it: its ~40 s of one core fit in the suite's end,
# where fewer tests than workers are left. Its report follows the suite's; either failing fails.
test: $(DEV_STAMP) ## make check, and the whole suite against a real Postgres (what CI runs)
	@checked=$$(mktemp); ( $(CHECK) ) > $$checked 2>&1 & checker=$$!; \
	$(PY) -m pytest -q $(PYTEST_PARALLEL); suite=$$?; \
	wait $$checker; check=$$?; echo "==> make check: exit $$check"; cat $$checked; rm -f $$checked; \
	[ $$suite -eq 0 ] && [ $$check -eq 0 ]

test-quick: $(DEV_STAMP) ## the inner loop: all but tests/e2e and the tests marked slow
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --ignore=tests/e2e -m "not slow"

# The console's screens in Chromium, as tests/e2e/test_console.py walks them: a PNG of each into
# docs/console/ (shown in docs/admin.md), and axe-core's findings per screen beside them.
screenshots: $(DEV_STAMP) ## the console's screenshots and axe-core report into docs/console/
	mkdir -p docs/console
	CONSOLE_SCREENSHOTS=docs/console CONSOLE_AXE_REPORT=docs/console/axe.json \
		$(PY) -m pytest -q tests/e2e/test_console.py -k revokes

# What a release uploads, built from clean sources into dist/ and checked as a user gets it:
# the metadata as PyPI reads it, the wheel installed in a fresh venv (with the server extra,
# from the package index) and run outside the checkout, and the npm tarball's file list.
DIST := dist
CHECK_VENV := $(DIST)/check-venv
dist: $(DEV_STAMP) ## build and check the wheel, the sdist and the npm tarball into dist/
	rm -rf $(DIST)
	if [ -x $(UV) ] && $(PY) -m build --installer uv --outdir $(DIST) .; then :; \
	else $(PY) -m build --outdir $(DIST) .; fi
	$(VENV)/bin/twine check --strict $(DIST)/*.whl $(DIST)/*.tar.gz
	$(PY) -m venv --without-pip $(CHECK_VENV)
	$(call pip_install,$(CHECK_VENV)/bin/python,--quiet "$$(ls $(DIST)/tokenrota-*.whl)[server]")
	cd / && $(CURDIR)/$(CHECK_VENV)/bin/python -c "import tokenrota.verify, tokenrota_server.app"
	cd / && $(CURDIR)/$(CHECK_VENV)/bin/tokenrota --help > /dev/null
	rm -rf $(CHECK_VENV)
	cd clients/js && npm pack --dry-run && npm pack --pack-destination $(CURDIR)/$(DIST)
	@echo "==> dist/ holds:" && ls $(DIST)

.PHONY: fuzz
fuzz: $(DEV_STAMP) ## schemathesis over /openapi.json on a local instance: no 5xx, answers as documented
	$(PY) -m fuzz $(FUZZ_ARGS)

bench: $(DEV_STAMP) ## the benchmarks in bench/ (numbers go to docs/benchmarks.md)
	$(PY) -m bench
	$(PY) -m bench.register_flood

soak: $(DEV_STAMP) ## a steady mixed load for SOAK_SECONDS (1800): RSS, pool, p50/p99 every 30 s
	$(PY) -m bench.soak

# A server still running on .data/ would outlive its deleted files. pg_ctl refuses to run as
# root: SIGINT is Postgres's fast shutdown. Only the postmaster of that very data directory is
# signalled, never whatever process has since been given a stale pid.
clean: ## stop any embedded PostgreSQL under .data/, then remove .data/ and the virtual environment
	@find .data -name postmaster.pid 2>/dev/null | while IFS= read -r pidfile; do \
		pgdata=$$(cd "$$(dirname "$$pidfile")" && pwd -P); pid=$$(head -n 1 "$$pidfile"); \
		if ps -p "$$pid" -o args= | grep -qF -- "-D $$pgdata"; then \
			echo "==> stopping the embedded PostgreSQL on $$pgdata (pid $$pid)"; \
			kill -INT "$$pid"; \
			while ps -p "$$pid" -o stat= | grep -qv Z; do sleep 0.1; done; \
		fi; \
	done
	rm -rf $(VENV) .data
