# The README's commands. Each sets up the virtual environment first when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= INFO
export DVC_NO_ANALYTICS := 1
# OpenMP's default (spinning) wait policy trains faster on an otherwise idle machine; export
# OMP_WAIT_POLICY=PASSIVE when another busy process shares the cores (spinning threads then stall).
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

.PHONY: setup run test test-slow test-boundscheck ui bench bench-kernels lint clean

setup: $(STAMP)

# torch first, from the local CPU wheel, then the project with its training extra and torch pinned on the
# same line. Serving alone needs only `pip install .` (no torch, no compiler).
$(STAMP): pyproject.toml setup.py src/textrnn/_kernels.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q torch==2.13.0 -e '.[train,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/textrnn run

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The kernel and text tests on a build of the kernels with every index checked (setup.py reads
# TEXTRNN_KERNELS_BOUNDSCHECK), in build/boundscheck beside a copy of the package: the installed build
# is left as it is. An out-of-bounds read or write raises IndexError there instead of passing unseen.
BOUNDSCHECK := build/boundscheck
KERNEL_TESTS := tests/unit/test_text.py tests/unit/test_pure_kernels.py tests/unit/test_cleaning.py \
	tests/unit/test_segments.py tests/unit/test_sources.py tests/unit/test_vocab.py tests/stages/test_ingest_clean_vocab.py
test-boundscheck: $(STAMP)
	rm -rf $(BOUNDSCHECK) && mkdir -p $(BOUNDSCHECK)
	cp -r src/textrnn $(BOUNDSCHECK)/textrnn && rm -f $(BOUNDSCHECK)/textrnn/_kernels.*.so $(BOUNDSCHECK)/textrnn/_kernels.c
	TEXTRNN_KERNELS_BOUNDSCHECK=1 $(BIN)/python setup.py -q build_ext --build-lib $(BOUNDSCHECK) --build-temp $(BOUNDSCHECK)-tmp
	PYTHONPATH=$(BOUNDSCHECK) $(BIN)/python -c "from textrnn import kernels; assert kernels.COMPILED and \
		kernels._module.BOUNDS_CHECKED and kernels.__file__.startswith('$(CURDIR)/$(BOUNDSCHECK)/'), kernels.__file__"
	PYTHONPATH=$(BOUNDSCHECK) $(BIN)/python -m pytest -q -p no:cacheprovider $(KERNEL_TESTS)

ui: $(STAMP)
	@echo "Prefect UI on http://127.0.0.1:4200 — point runs at it with:"
	@echo "  export PREFECT_API_URL=http://127.0.0.1:4200/api"
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

bench: $(STAMP)
	$(BIN)/python bench/data_throughput.py

bench-kernels: $(STAMP)
	$(BIN)/python bench/kernels.py

lint: $(STAMP)
	$(BIN)/ruff check src tasks flows tests bench

clean:
	rm -rf $(VENV) .prefect
