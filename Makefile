# The README's two commands are `make demo` and `make test`; each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAKE   ?= ./lake
PORT   ?= 8501

.PHONY: setup demo browser labelstudio test test-fast lint bench lock clean

# --no-cache-dir: torch and its CUDA libraries are about 5 GB installed; a cached copy of the wheels would double that on disk.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-cache-dir -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the exact versions in constraints.txt

demo: setup  ## build the demo lake in ./lake from synthetic data, then serve the review UI
	$(BIN)/edgemine demo --lake $(LAKE) --config configs/demo.toml
	$(BIN)/edgemine tables --lake $(LAKE)
	@echo "edgemine: review UI at http://localhost:$(PORT) on lake $(LAKE) (Ctrl-C stops it)"
	$(BIN)/edgemine ui --lake $(LAKE) --port $(PORT) --config configs/demo.toml

browser:  ## Debian's chromium for the browser test; where it cannot be installed, that test is skipped, loudly
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo="sudo -n"; fi && \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "WARNING: chromium is not installed and could not be (needs apt, and root or password-less sudo: apt-get install chromium); the browser test will be SKIPPED"

# label-studio (about 1 GB, with its own Django and pins) stays out of .venv; the export tests start it from here.
LABEL_STUDIO_VENV ?= .venv-labelstudio
labelstudio:  ## label-studio 1.23.2 in its own virtualenv for the Label Studio tests; where it cannot be installed, they are SKIPPED, loudly
	@test -x $(LABEL_STUDIO_VENV)/bin/label-studio || { $(PYTHON) -m venv $(LABEL_STUDIO_VENV) && \
	  $(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir label-studio==1.23.2; } || \
	  echo "WARNING: label-studio could not be installed in $(LABEL_STUDIO_VENV); the Label Studio tests will be SKIPPED"

# Both cores: xdist workers, each test module on one worker (its module fixtures built once).
JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(JOBS) --dist loadscope

test: setup browser labelstudio  ## run the whole test suite (S3 tests start their own moto server; the UI test drives chromium)
	$(PYTEST)

# The developer's loop: no S3 server, no extra processes, no model runs, no browser, Label Studio or Ray cluster, no end-to-end jobs.
test-fast: setup  ## the fast tier (under 5 minutes): what `make test` runs, less the costly kinds (pyproject.toml's markers)
	$(PYTEST) -m "not (s3 or processes or model or browser or label_studio or ray or slow)"

lint: setup  ## ruff's checks (the configuration in pyproject.toml; tests/test_lint.py runs the same)
	$(BIN)/ruff check .

bench: setup  ## run the benchmarks; results go to BENCHMARKS.md by hand
	$(BIN)/python tests/benchmarks/bench_ingest.py
	$(BIN)/python tests/benchmarks/bench_embed.py
	$(BIN)/python tests/benchmarks/bench_mining.py
	$(BIN)/python tests/benchmarks/bench_knn.py
	$(BIN)/python tests/benchmarks/bench_ui.py --apptest
	$(BIN)/python tests/benchmarks/bench_startup.py
	$(BIN)/python tests/benchmarks/bench_lake.py
	$(BIN)/python tests/benchmarks/bench_export.py
	$(BIN)/python tests/benchmarks/bench_s3.py
	$(BIN)/python tests/benchmarks/bench_queues.py
	$(BIN)/python tests/benchmarks/bench_train.py
	$(BIN)/python tests/benchmarks/bench_metrics.py
	$(BIN)/python tests/benchmarks/bench_loop.py
	$(BIN)/python tests/benchmarks/bench_ray.py

lock: setup  ## re-pin constraints.txt from the current environment
	{ head -n 2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) $(LABEL_STUDIO_VENV) $(LAKE) .pytest_cache
