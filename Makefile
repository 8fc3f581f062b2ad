# Every target creates .venv when it is missing and installs what it needs. Another
# Python in a venv of its own: make test PYTHON=python3.13 VENV=.venv-3.13
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: test suite demo bench bench-check docs lint typecheck dist clean

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

# mypy on src and the signature checks in tests/typing; pyright on those checks too
# ([tool.pyright] in pyproject.toml), reading this venv's packages.
typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src tests/typing
	$(BIN)/pyright --pythonpath $(PY)

test: lint typecheck suite

# The test suite alone, under coverage: CI runs it on every Python it claims.
suite: $(VENV)/.test-installed
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

# Quiet (-q): only warnings and errors are printed, and any of them fails the build.
docs: $(VENV)/.docs-installed
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html
	$(BIN)/sphinx-build -q -W --keep-going -b doctest docs docs/_build/doctest
	@echo "docs: built docs/_build/html; every doctest passed"

$(VENV)/.dist-installed: | $(PY)
	$(PY) -m pip install --quiet build twine
	@touch $@

# An sdist and a wheel in dist/, then checks: their metadata (twine check --strict,
# which also renders the README), and that the wheel holds every file of the package
# (py.typed and package data included) and nothing from outside it.
dist: $(VENV)/.dist-installed
	rm -rf dist
	@# build's output only when it fails
	@log=$$(mktemp) && trap 'rm -f "$$log"' EXIT && \
	$(PY) -m build --outdir dist . > "$$log" 2>&1 || { cat "$$log"; exit 1; }
	$(BIN)/twine check --strict dist/*
	@cd src && find stalwart -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | sort \
		> ../dist/expected.txt
	@$(PY) -m zipfile -l dist/*.whl | awk 'NR > 1 {print $$1}' \
		| grep '^stalwart/' | sort > dist/wheel.txt
	@diff -u dist/expected.txt dist/wheel.txt \
		|| { echo "dist: the wheel's files differ from src/stalwart's (above)"; exit 1; }
	@rm dist/expected.txt dist/wheel.txt
	@echo "dist: built and checked $$(cd dist && echo *)"

clean:
	rm -rf $(VENV) dist docs/_build .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
