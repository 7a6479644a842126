# One entry point for developers and CI (.ci/run calls these targets).
#   make venv    .venv with the project installed editable, with its dev tools
#   make run     mintca serve (MINTCA_* variables from the environment or `make run MINTCA_X=...`)
#   make test    pytest; extra arguments in PYTEST_ARGS, e.g. make test PYTEST_ARGS='-k tokens -x'
#   make lint    ruff, ruff format --check, mypy --strict, import contracts
#   make check   lint, then test: what CI runs
#   make bench   the benchmarks of bench/ (OCSP against OpenSSL's responder, enrollment against
#                CFSSL, CRLs, revocations, CLI start-up, serve -> /ready); each prints a table.
#                Needs wrk, openssl and golang-cfssl (Debian); PostgreSQL rows run when
#                MINTCA_TEST_DATABASE_URL is set

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Touched after a successful install; pyproject.toml newer than it means install again.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Branch coverage of app/, subprocesses (mintca serve, the CLI) included; the floor is in
# pyproject.toml. `make test PYTEST_ARGS=tests/ca COVERAGE=` runs a subset without it.
COVERAGE ?= --cov --cov-report=term

.PHONY: venv run test lint check bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# MINTCA_* from the environment and from make's command line reach the server (GNU make
# exports both to recipes).
# A first local session enrolls over plain HTTP from localhost: tokens over plain HTTP are
# accepted from loopback only, and only with MINTCA_ALLOW_INSECURE_TOKENS=true (README, Security).
run: venv
	MINTCA_ALLOW_INSECURE_TOKENS=$${MINTCA_ALLOW_INSECURE_TOKENS:-true} $(BIN)/mintca serve

test: venv
	$(BIN)/pytest -q $(COVERAGE) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

# Each script starts what it measures on loopback and stops it; wrk and openssl are needed.
BENCHES ?= ocsp enroll crl revoke cli ready
bench: venv
	@for b in $(BENCHES); do test -f bench/$$b.py || continue; \
		echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; echo; done
