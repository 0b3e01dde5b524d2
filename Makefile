# The README's two commands are `make demo` and `make test`; each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAKE   ?= ./lake

.PHONY: setup demo test bench lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the exact versions in constraints.txt

demo: setup  ## build the demo lake in ./lake from synthetic data
	$(BIN)/edgemine demo --lake $(LAKE)
	$(BIN)/edgemine tables --lake $(LAKE)

test: setup  ## run the whole test suite (S3 tests start their own moto server)
	$(BIN)/python -m pytest

bench: setup  ## run the benchmarks; results go to BENCHMARKS.md by hand
	$(BIN)/python tests/benchmarks/bench_ingest.py
	$(BIN)/python tests/benchmarks/bench_embed.py
	$(BIN)/python tests/benchmarks/bench_mining.py
	$(BIN)/python tests/benchmarks/bench_knn.py

lock: setup  ## re-pin constraints.txt from the current environment
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) $(LAKE) .pytest_cache
