# Every target creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: test demo bench bench-check docs lint typecheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

$(VENV)/.docs-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,docs]"
	@touch $@

$(VENV)/.bench-installed: pyproject.toml benchmarks/requirements.txt | $(PY)
	$(PY) -m pip install --quiet -e . -r benchmarks/requirements.txt
	@touch $@

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests examples benchmarks docs
	$(BIN)/ruff format --check src tests examples benchmarks docs

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src tests/typing

test: lint typecheck
	$(BIN)/coverage erase
	@# coverage starts before pytest, so modules pytest plugins import early are measured too
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

demo: $(VENV)/.test-installed
	$(PY) examples/run_all.py

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run.py

# Every benchmark script, one value each, results to a temporary directory: that they
# still run (CI), not what they measure. Prints the run's output only when it fails.
bench-check: $(VENV)/.bench-installed
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	if BENCH_RESULTS="$$out" BENCH_ARGS=--debug-single-value $(PY) benchmarks/run.py \
		> "$$out/log" 2>&1; then echo "bench-check: every benchmark script ran"; \
	else cat "$$out/log"; echo "bench-check: a benchmark script failed"; exit 1; fi

docs: $(VENV)/.docs-installed
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html
	$(BIN)/sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

clean:
	rm -rf $(VENV) docs/_build .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
