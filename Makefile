# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup kafka browser demo dashboard test unit lint dramatiq-suite floor bench faults soak reliability clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

kafka:
	$(PYTHON) scripts/localkafka.py fetch

# Debian's chromium and chromedriver for the dashboard's browser tests, when root with
# apt-get (a CI machine); elsewhere those tests skip, saying how to install them.
browser:
	$(PYTHON) scripts/browser.py

demo: setup kafka
	$(PY) scripts/demo.py

# The demo's queues with the dashboard on them; prints its address.
dashboard: setup kafka
	$(PY) scripts/dashboard.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: setup kafka browser lint
	$(PY) -m pytest
	$(MAKE) --no-print-directory floor
	$(MAKE) --no-print-directory dramatiq-suite

# Dramatiq's own behavioural tests for the installed Dramatiq, its stub_broker a KafkaBroker
# (dramatiq_suite/): fetched from the package index at the first run (~2.5 min on 2 cores).
dramatiq-suite: setup kafka
	suite=$$($(PY) dramatiq_suite/fetch.py) && $(PY) -m pytest -p no:cacheprovider -rsxX "$$suite"

# The tests that lean on Dramatiq most, on the lowest Dramatiq pyproject.toml allows (.venv-floor);
# nothing to do while that is the installed version.
floor: setup kafka
	$(PY) scripts/floor.py

# Side-by-side figures into docs/performance.md and docs/performance.png (~15 min;
# installs Debian's redis-server and rabbitmq-server when missing, needs root).
bench: setup kafka
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# The fault scenarios at full size (FAULT_JOBS jobs where the issue counts jobs), then
# docs/reliability.md from their figures. `make test` runs them too, at 5,000 jobs.
FAULT_JOBS ?= 20000
# The frozen-node scenario's runs (1 in make test): its defect showed in 1 run of 4.
FROZEN_NODE_RUNS ?= 6
# Hypothesis examples of the decoder fuzz (5 in make test).
FUZZ_EXAMPLES ?= 50
# The soak's seconds of load (30 in make test); make faults runs it too.
SOAK_SECONDS ?= 1800
faults: setup kafka
	FAULT_JOBS=$(FAULT_JOBS) FROZEN_NODE_RUNS=$(FROZEN_NODE_RUNS) FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest integration -m faults
	$(PY) integration/report.py

# Only the soak (30 minutes of load by default), then docs/reliability.md and docs/soak.png.
soak: setup kafka
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest integration/test_soak.py
	$(PY) integration/report.py

reliability: setup
	$(PY) integration/report.py

unit: setup
	$(PY) -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) .venv-floor .bench .pytest_cache .mypy_cache .ruff_cache .dramatiq-suite
