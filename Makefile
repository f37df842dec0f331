# Two commands on a fresh machine:  `make run` (set up + the main job) and `make test` (set up + tests).
VENV := .venv
PY := $(VENV)/bin/python
RL := $(VENV)/bin/rewardlab
OUT ?= out

.PHONY: setup run run-hub demo check test bench

# One environment for running, checking and testing: the test and dev (mypy, ruff) extras.
setup:
	bash scripts/setup.sh test,dev

# The main job, offline: clean vs unfiltered vs random control on the HH-RLHF sample the package
# ships (1,512 harmless-base pairs, split 70/30 by prompt hash), 2 seeds.
run: setup
	$(RL) compare --seeds 2 -o $(OUT)

# The same experiment on the full Anthropic/hh-rlhf from the hub (quick preset: <= 4,000 train pairs).
run-hub: setup
	$(RL) compare --train hh-rlhf -o $(OUT)

# Start here: the whole loop in ~7 min on 2 cores (after setup), on synthetic preferences whose
# flipped labels (20%) are known, so the detectors and the cleaning can be checked against the
# truth; report in demo/report.html.
demo: setup
	$(RL) demo -o demo

# Lint the code and type-check the package (mypy strict: pyproject.toml [tool.mypy]).
check: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/rewardlab

# Tests: the store tests run on SQLite and on a real PostgreSQL started here, the review UI tests in
# Debian's Chromium installed here (apt, as root); each a failure in CI when it cannot be had.
test: setup
	bash scripts/install_browser.sh
	@url="$$(bash scripts/start_postgres.sh)" || { [ "$${CI:-}" != true ] || exit 1; url=; }; \
	REWARDLAB_TEST_PG_URL="$$url" $(PY) -m pytest -q

bench: setup
	bash scripts/setup.sh test,bench
	$(PY) benchmarks/ingest_detect.py
	$(PY) benchmarks/train_throughput.py
