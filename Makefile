# Two commands on a fresh machine:  `make run` (set up + the main job) and `make test` (set up + tests).
VENV := .venv
PY := $(VENV)/bin/python
RL := $(VENV)/bin/rewardlab
SAMPLE := ../shared/data/hh-rlhf/harmless-sample.jsonl.gz
OUT ?= out

.PHONY: setup run run-offline demo test bench

setup:
	bash scripts/setup.sh test

# The main job: clean vs unfiltered vs random control on Anthropic HH-RLHF from the hub.
run: setup
	$(RL) compare -o $(OUT)

# The same experiment offline, on the shared 1,512-pair sample.
run-offline: setup
	$(RL) compare --train $(SAMPLE) --test-fraction 0.3 --seeds 2 -o $(OUT)

demo: setup
	$(RL) demo -o demo

# Tests: the store tests run on SQLite and on a real PostgreSQL started here (a failure in CI).
test: setup
	@url="$$(bash scripts/start_postgres.sh)" || { [ "$${CI:-}" != true ] || exit 1; url=; }; \
	REWARDLAB_TEST_PG_URL="$$url" $(PY) -m pytest -q

bench: setup
	bash scripts/setup.sh test,bench
	$(PY) benchmarks/ingest_detect.py
	$(PY) benchmarks/train_throughput.py
