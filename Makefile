# streamjobs developer tasks. `make test` and `make demo` need no Docker: Kafka runs from
# Maven Central artifacts on the machine's Java 17 (`streamjobs dev-broker`, streamjobs/dev/kafka.py).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Go lives outside the default PATH on these machines (shells only add it in ~/.bashrc); Debian's
# golang-go is too old for Jaeger's module, so look where the machine's Go is installed first.
export PATH := /usr/local/go/bin:$(PATH)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 9092
PYTEST_ARGS ?=
# Re-run `pip install` only when the dependency list changes.
VENV_STAMP := $(VENV)/.installed-from-pyproject

JAEGER_QUERY_PORT ?= 16686

.PHONY: help venv system-deps kafka-up kafka-down kafka-status demo test lint clean \
	helm-build jaeger-build jaeger-up jaeger-down jaeger-status

help:
	@echo "make venv          create .venv and install streamjobs[dev] (re-runs when pyproject.toml changes)"
	@echo "make system-deps   apt-get install docker-compose, prometheus, chromium (and java/mvn) if missing; needs root"
	@echo "make kafka-up      start (or reuse) a local Kafka on 127.0.0.1:\$$PORT (default 9092)"
	@echo "make kafka-down    stop that broker (data kept under ~/.cache/streamjobs/broker-\$$PORT)"
	@echo "make demo          kafka-up, then run \`streamjobs demo\` against it"
	@echo "make jaeger-up     build (once, ~6 min cold) and start a local Jaeger on 127.0.0.1"
	@echo "make jaeger-down   stop it"
	@echo "make test          the whole test suite against a real broker (PYTEST_ARGS=... to narrow, TEST_PROCESSES=N)"
	@echo "make lint          ruff check, ruff format --check, mypy"
	@echo "make clean         remove .venv and caches"

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Debian packages the tests need: docker-compose (tests/unit/test_compose.py runs
# `docker-compose config`), prometheus (promtool checks and unit-tests the alert rules, and a
# real Prometheus scrapes a worker in tests/integration/test_observability.py), Chromium with its
# chromedriver for the dashboard's browser test (Selenium drives Debian's binaries: nothing is
# downloaded at test time), and Java 17 + Maven for the local broker if a machine lacks them.
system-deps:
	@missing=(); \
	command -v docker-compose >/dev/null || missing+=(docker-compose); \
	command -v promtool >/dev/null || missing+=(prometheus); \
	command -v java >/dev/null || missing+=(openjdk-17-jre-headless); \
	command -v mvn >/dev/null || missing+=(maven); \
	command -v go >/dev/null || missing+=(golang-go); \
	command -v chromium >/dev/null || missing+=(chromium); \
	command -v chromedriver >/dev/null || missing+=(chromium-driver); \
	if (( $${#missing[@]} == 0 )); then exit 0; fi; \
	if [[ $$(id -u) -ne 0 ]]; then \
	  echo "missing $${missing[*]}: run \`sudo make system-deps\` (needs apt-get as root)" >&2; \
	  exit 1; \
	fi; \
	echo "apt-get install $${missing[*]}"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q; \
	apt-get install -y -q --no-install-recommends "$${missing[@]}"

kafka-up: venv
	$(BIN)/streamjobs dev-broker up --port $(PORT)

kafka-down: venv
	$(BIN)/streamjobs dev-broker down --port $(PORT)

kafka-status: venv
	$(BIN)/streamjobs dev-broker status --port $(PORT)

demo: venv kafka-up
	$(BIN)/streamjobs demo --bootstrap-servers 127.0.0.1:$(PORT)

# Helm for the chart tests (tests/integration/test_helm_chart.py), built once from the Go proxy
helm-build: venv
	$(BIN)/python -m streamjobs.dev.helm_build

jaeger-build: venv
	$(BIN)/streamjobs dev-jaeger build

jaeger-up: venv
	$(BIN)/streamjobs dev-jaeger up --query-port $(JAEGER_QUERY_PORT)

jaeger-down: venv
	$(BIN)/streamjobs dev-jaeger down --query-port $(JAEGER_QUERY_PORT)

jaeger-status: venv
	$(BIN)/streamjobs dev-jaeger status --query-port $(JAEGER_QUERY_PORT)

# pytest's exit status fails the target (make then exits 2); no pipes that could hide it.
# Jaeger is built first: a cold build (~6 min) is longer than a test's timeout.
# Test files are spread over TEST_PROCESSES pytest processes (pytest-xdist, a whole file to one
# process so module fixtures such as the 3-node cluster stay whole); each process is its own
# session with its own broker. Most tests wait on Kafka, so two halve the wall time on 2 cores.
# TEST_PROCESSES=0 runs everything in one process.
TEST_PROCESSES ?= 2
test: venv system-deps jaeger-build helm-build
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
