# One entry point for set-up, tests and runs. Every target installs what it needs first,
# so `make test` works on a fresh Debian machine (as root) and in CI.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install install-bench redis-server postgres chromium hey test chaos verify bench bench-smoke lint typecheck clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# Tests that restart Redis start their own redis-server; the binary comes from Debian.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# The SQL barrier tests start a PostgreSQL of their own when PARTICIPANT_POSTGRES_URL does not
# answer; initdb and postgres come from Debian (the package may also start a cluster on 5432).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "initdb not found: installing Debian's postgresql package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The dashboard's browser test (tests/test_ui_browser.py) drives Debian's chromium through
# Playwright; nothing downloads a browser of its own.
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "chromium not found: installing Debian's chromium package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The API benchmark's load generator (Go, rate-limited, per-request CSV), from Debian.
hey:
	@command -v hey >/dev/null 2>&1 || { \
	  echo "hey not found: installing Debian's hey package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; }

# The default suite: real Redis (REDIS_URL if it answers, else a redis-server of its own),
# real PostgreSQL (PARTICIPANT_POSTGRES_URL if it answers, else a server of its own), a real
# Celery worker subprocess, real HTTP stub services, and Debian's chromium for the dashboard.
test: install redis-server postgres chromium
	$(BIN)/python -m pytest -m "not chaos" $(PYTEST_ARGS)

chaos: install redis-server
	$(BIN)/python -m pytest -m chaos -s $(PYTEST_ARGS)

# The model-based stateful test of the protocol with many examples (SAGA_MODEL_EXAMPLES,
# default 1000, about 3 minutes on 2 cores); `make test` runs a short profile of it.
verify: install redis-server
	SAGA_MODEL_PROFILE=long $(BIN)/python -m pytest tests/test_protocol_model.py --timeout 0 \
	  -p no:cacheprovider --hypothesis-show-statistics $(PYTEST_ARGS)

# Benchmarks run on demand (not timed tests): results in bench/results.json, charts in
# docs/img/, figures in docs/performance.md. About 30 minutes on 2 cores: the headline comparison
# three times per persistence mode, five worker pools at 500 sagas, the API under load, then
# memory, GET /saga and the dashboard with 100,000 and 1,000,000 sagas stored (filling takes
# most of it), then sagas through the API against plain Celery (task events on and off) and
# DBOS Transact on PostgreSQL (bench/e2e.py, a few minutes), and the CPU per saga with tracing
# off and on (bench/tracing.py, docs/observability.md).
bench: install-bench redis-server hey
	$(BIN)/python -m bench.run --sagas 1000 --latency 200 --persistence both --repeat 3 --scaling 500
	$(BIN)/python -m bench.api_load --rate 200 --seconds 10
	$(BIN)/python -m bench.listing --sizes 100000 1000000
	$(BIN)/python -m bench.e2e --sagas 1000 --threads 8 --latency 200 --profile
	$(BIN)/python -m bench.tracing --sagas 300 --repeat 3
	$(BIN)/python -m bench.plot

# CI keeps the harness working with a few dozen sagas: every code path (no-op and HTTP steps,
# latency, a scaling point, the charts), both persistence modes; its figures mean nothing.
bench-smoke: install-bench redis-server hey
	out=$$(mktemp -d) && \
	$(BIN)/python -m bench.run --sagas 30 --latency 10 --persistence both --repeat 1 \
	  --scaling 20 --scaling-points prefork:1 --out $$out/results.json && \
	$(BIN)/python -m bench.api_load --rate 40 --seconds 2 --out $$out/api.json && \
	$(BIN)/python -m bench.listing --sizes 300 --queries 5 --out $$out/listing.json && \
	$(BIN)/python -m bench.e2e --sagas 20 --latency 3 --profile --out $$out/e2e.json && \
	$(BIN)/python -m bench.tracing --sagas 10 --repeat 1 --out $$out/tracing.json && \
	$(BIN)/python -m bench.plot --results $$out/results.json --api-results $$out/api.json \
	  --listing-results $$out/listing.json --out $$out/img && \
	rm -rf $$out

# matplotlib for the charts: only the benchmarks need it.
BENCH_STAMP = $(STAMP)-bench
install-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy --strict sagas

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache var

# The whole system on this machine: Redis (REDIS_URL if it answers, else a redis-server of its
# own with data in var/redis), API, worker, beat, Flower and the demo services under honcho.
# One Ctrl-C stops everything. See docs/local-run.md.
.PHONY: run
run: install redis-server
	$(BIN)/python scripts/run-local
