# tflq: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean venv samples

venv: $(STAMP)

# (Re)install when the project's dependencies change; a fresh machine gets everything from the registry.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The run's progress goes to stderr; the comparison report is printed once, from report.md, even when a gate fails
# (the exit status is kept), followed by where the HTML report is.
demo: $(STAMP)
	@$(BIN)/tflq run configs/demo.yaml > /dev/null; status=$$?; echo; \
	 if [ -f build/demo/report.md ]; then cat build/demo/report.md; fi; \
	 if [ -f build/demo/report.html ]; then echo; echo "HTML report: build/demo/report.html"; fi; exit $$status

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Style and bugbear (ruff), types (mypy, on tflq/) and the stage layering (import-linter); pyproject.toml configures
# all three. .ci/run runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check tflq tools docs/generate.py
	$(BIN)/mypy tflq
	$(BIN)/lint-imports
	$(BIN)/python docs/generate.py --check

bench: $(STAMP)
	$(BIN)/python benchmarks/sweep.py
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/batch_cache.py
	$(BIN)/python benchmarks/qat.py
	$(BIN)/python benchmarks/auto_search.py

samples: $(STAMP)
	$(BIN)/python sample_models/build.py

clean:
	rm -rf build .pytest_cache
