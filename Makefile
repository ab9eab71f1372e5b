# Two commands for a newcomer: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two pytest workers: most tests wait on real processes and sockets, so two share the
# machine's cores well (the suite takes about half the time it takes in one).
WORKERS ?= 2

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e '.[disk]' >$(VENV)/pyfuse3-build.log 2>&1 \
		|| echo "pyfuse3 did not build (needs libfuse3-dev, pkg-config, python3-dev): the" \
			"lossy-disk tests skip; its build output is in $(VENV)/pyfuse3-build.log;" \
			"once they are installed, 'make clean' and make again retries it"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/raftlab run

# Everything: lint, types, the import contracts, and every test (the slow detection runs too).
test: lint
	$(BIN)/pytest -q -n $(WORKERS) --dist worksteal

# The same without the slow detection runs (whole experiments, suites, replays, shrinks):
# a few minutes, for the edit-test loop. CI and `make test` run them all.
test-fast: lint
	$(BIN)/pytest -q -n $(WORKERS) --dist worksteal -m "not slow"

# Style, types, and the architecture's import contracts (pyproject.toml, docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check lab nodes tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/raftkv_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
