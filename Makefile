# Two commands matter: `make demo` and `make test`. Everything they need is installed here.
# `make test` runs its own two Slurm clusters (two Slurm test files run at once, one on each:
# tests/slurm/groups.py) and PostgreSQL in a fresh folder on free ports (scripts/test-env.sh),
# so two runs on one machine never stop each other's services.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BUF := node_modules/.bin/buf
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export GRPC_VERBOSITY ?= ERROR
# pytest workers: most tests wait on brokers, runners and services rather than compute, so one
# more worker than the CI machine's two cores keeps both busy (tests/conftest.py says how files split).
TEST_WORKERS ?= 3

.PHONY: demo test lint typecheck protos check-protos buf-lint pytest bench slurm-up slurm-down clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Runtime + the cloud SDKs and their local emulators (the demo runs clouds emulated).
$(VENV)/.demo-installed: pyproject.toml $(VENV)/bin/activate
	$(PIP) install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/bin/activate
	$(PIP) install --quiet -e '.[dev]'
	touch $@

$(BUF): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

demo: $(VENV)/.demo-installed
	@eval "$$(scripts/test-env.sh)"; $(PY) scripts/demo.py; rc=$$?; rm -rf "$$SZB_TEST_RUN_DIR"; exit $$rc

test: $(VENV)/.dev-installed $(BUF)
	$(MAKE) lint typecheck check-protos buf-lint
	scripts/system-deps.sh || echo "WARNING: system packages missing; Slurm/PostgreSQL tests will fail" >&2
	@set -o pipefail; \
	eval "$$(scripts/test-env.sh)"; echo "make test: services of this run in $$SZB_TEST_RUN_DIR" >&2; \
	if scripts/slurm-cluster.sh start; then \
	  eval "$$(scripts/slurm-cluster.sh env)"; started=1; \
	else echo "WARNING: could not start the Slurm test cluster; Slurm tests will fail" >&2; started=0; fi; \
	slurm_b() { SZB_SLURM_DIR=$$SZB_SLURM_B_DIR SZB_SLURM_REST_PORT=$$SZB_SLURM_B_REST_PORT \
	  SZB_SLURMCTLD_PORT=$$SZB_SLURM_B_CTLD_PORT SZB_SLURMD_PORT=$$SZB_SLURM_B_SLURMD_PORT scripts/slurm-cluster.sh "$$@"; }; \
	if [ "$$started" = 1 ] && slurm_b start && (umask 077; slurm_b env > "$$SZB_SLURM_B_DIR/client.env"); then \
	  export SZB_SLURM_B_ENV=$$SZB_SLURM_B_DIR/client.env; \
	else echo "WARNING: no second Slurm cluster; all Slurm tests run on one worker" >&2; fi; \
	if scripts/pg-test.sh start; then eval "$$(scripts/pg-test.sh env)"; pg_started=1; \
	else echo "WARNING: could not start PostgreSQL; the PostgreSQL store tests will fail" >&2; pg_started=0; fi; \
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --durations=25; rc=$$?; \
	[ "$$started" = 1 ] && scripts/slurm-cluster.sh stop; \
	[ -d "$$SZB_SLURM_B_DIR" ] && slurm_b stop; \
	[ "$$pg_started" = 1 ] && scripts/pg-test.sh stop; \
	rm -rf "$$SZB_TEST_RUN_DIR"; \
	exit $$rc

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check broker adapters tests bench scripts

typecheck: $(VENV)/.dev-installed
	$(VENV)/bin/mypy

protos: $(VENV)/.dev-installed
	sh scripts/gen-protos.sh

check-protos: $(VENV)/.dev-installed
	sh scripts/check-protos.sh

buf-lint: $(BUF)
	$(BUF) lint

pytest: $(VENV)/.dev-installed
	$(PY) -m pytest -q

bench: $(VENV)/.dev-installed
	$(PY) bench/grpc_load.py --json
	$(PY) bench/placement.py --json

slurm-up:
	scripts/slurm-cluster.sh install && scripts/slurm-cluster.sh start

slurm-down:
	scripts/slurm-cluster.sh stop

clean:
	rm -rf $(VENV) node_modules .szb .demo
