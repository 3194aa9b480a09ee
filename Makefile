# make demo  - set up what is missing, start a local RabbitMQ, run the 3-worker tour
# make test  - set up what is missing, then lint and the whole test suite on a real broker
# make test-rabbitmq4 - the whole suite again, on RabbitMQ 4.0 (from a Debian 13 root)
# make test-rabbitmq43 - the whole suite again, on RabbitMQ 4.3 (on the same root's Erlang)
# make bench - throughput, fair dispatch and memory against baselines (docs/BENCHMARKS.md)
# make dashboard-png - docs/dashboard.png: the dashboard mid-run, in headless chromium
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROKER_PORT ?= 5672
export BROKER_PORT

# The suite runs on TEST_WORKERS pytest-xdist workers (docs/DESIGN.md, "The suite", says why
# this many); TEST_WORKERS=1 runs it in one process. Each worker starts its own nodes on ports
# of its own: worker N's from TEST_NODE_PORT + 14 N and TEST_CLUSTER_PORT + 3 N (tests/helpers.py);
# the shared broker on TEST_BROKER_PORT is started once for all of them.
TEST_WORKERS ?= 4
PYTEST_PARALLEL = -n $(if $(filter 1,$(TEST_WORKERS)),0,$(TEST_WORKERS))
# make test's ports (5673; 5690... for the workers' nodes; 5811... for their clusters).
TEST_BROKER_PORT ?= 5673
TEST_NODE_PORT ?= 5690
TEST_CLUSTER_PORT ?= 5811
# RabbitMQ 4's test nodes take ports clear of make test's (6673, 6690..., 6811...).
RMQ4_TEST_BROKER_PORT ?= 6673
RMQ4_TEST_NODE_PORT ?= 6690
RMQ4_TEST_CLUSTER_PORT ?= 6811
# RabbitMQ 4.3's likewise (7673, 7690..., 7811...).
RMQ43_TEST_BROKER_PORT ?= 7673
RMQ43_TEST_NODE_PORT ?= 7690
RMQ43_TEST_CLUSTER_PORT ?= 7811
# make test-rabbitmq4 runs the whole suite on 4.0 (in parallel, as make test does); RMQ4_TESTS
# names files to run there instead (e.g. RMQ4_TESTS=tests/test_reliability.py).
RMQ4_TESTS ?=

.PHONY: help setup demo test test-rabbitmq4 test-rabbitmq43 bench lint format broker-up broker-down broker-status \
	browser dashboard-png clean

help:
	@echo "make demo         the tour: broker, 3 workers, emit tasks.csv, report"
	@echo "make test         lint, then every test against a real RabbitMQ"
	@echo "make test-rabbitmq4  every test again, on RabbitMQ 4.0 (BROKER_RABBITMQ=4)"
	@echo "make test-rabbitmq43 every test again, on RabbitMQ 4.3 (BROKER_RABBITMQ=4.3)"
	@echo "make bench        benchmarks against baselines (~10 min); writes docs/BENCHMARKS.md"
	@echo "make broker-up    start the local RabbitMQ (BROKER_PORT=$(BROKER_PORT))"
	@echo "make broker-down  stop it"
	@echo "make lint         ruff and mypy"
	@echo "make dashboard-png  docs/dashboard.png, the dashboard mid-run (needs chromium)"

# Re-run the install only when the project's dependencies change.
$(STAMP): pyproject.toml requirements.txt scripts/setup
	@scripts/setup
	@touch $@

setup: $(STAMP)

broker-up:
	@scripts/broker start

broker-down:
	@scripts/broker stop

broker-status:
	@scripts/broker status

demo: $(STAMP) broker-up
	@scripts/demo

# Dramatiq and Celery, for the bench's peers section: the optional `bench` extra. A failed
# install leaves no stamp (so the next run tries again), and the peers section says what is
# missing while the rest of the bench goes on.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	@echo "bench: installing the bench extra (Dramatiq, Celery) into $(VENV)..."
	@if $(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,bench]"; then \
	  touch $@; \
	else \
	  echo "bench: could not install the bench extra; the peers section will say so" >&2; \
	fi

# The local broker unless AMQP_URL names one; results in bench/results/latest.json.
bench: $(STAMP) $(BENCH_STAMP)
	@if [ -z "$${AMQP_URL:-}" ]; then scripts/broker start; fi
	@$(BIN)/python -m bench.run
	@$(BIN)/python -m bench.report

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

format: $(STAMP)
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

# Debian's chromium for the dashboard's browser test; without it that test fails, saying why.
browser:
	@scripts/browser || echo "make: going on without chromium; tests/test_dashboard_browser.py will fail" >&2

test: lint browser
	@TEST_BROKER_PORT=$(TEST_BROKER_PORT) TEST_NODE_PORT=$(TEST_NODE_PORT) \
	  TEST_CLUSTER_PORT=$(TEST_CLUSTER_PORT) $(BIN)/pytest $(PYTEST_PARALLEL)

# The first run builds the Debian 13 root RabbitMQ 4 runs from (about 1.5 min, once a machine).
test-rabbitmq4: $(STAMP) browser
	@BROKER_RABBITMQ=4 scripts/broker install
	@BROKER_RABBITMQ=4 TEST_BROKER_PORT=$(RMQ4_TEST_BROKER_PORT) \
	  TEST_NODE_PORT=$(RMQ4_TEST_NODE_PORT) TEST_CLUSTER_PORT=$(RMQ4_TEST_CLUSTER_PORT) \
	  $(BIN)/pytest $(PYTEST_PARALLEL) $(RMQ4_TESTS)

# RabbitMQ 4.3 from its generic-unix package (RABBITMQ43_TARBALL, else ../shared/rabbitmq/),
# unpacked once a machine into the Debian 13 root that test-rabbitmq4 builds.
test-rabbitmq43: $(STAMP) browser
	@BROKER_RABBITMQ=4.3 scripts/broker install
	@BROKER_RABBITMQ=4.3 TEST_BROKER_PORT=$(RMQ43_TEST_BROKER_PORT) \
	  TEST_NODE_PORT=$(RMQ43_TEST_NODE_PORT) TEST_CLUSTER_PORT=$(RMQ43_TEST_CLUSTER_PORT) \
	  $(BIN)/pytest $(PYTEST_PARALLEL)

dashboard-png: $(STAMP) broker-up
	@scripts/browser
	@scripts/dashboard-png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
