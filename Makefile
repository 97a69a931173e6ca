# Two commands do everything (each creates .venv with the pinned dependencies when missing):
#   make train    set up, then train the default LSTM on Tiny Shakespeare (4-8 min on 2 CPU cores)
#   make test     set up, then run the test suite but the multi-process fault tests
#   make test-all set up, then run every test (what CI runs)
# Extra flags: make train ARGS="--preset=quick"   make test ARGS="-k gradients"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxrnn-installed
# make test / test-all run the suite as JOBS pytest processes at once (tests/run_shards.py)
JOBS ?= 2

.PHONY: setup train test test-all gradcheck bench clean

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "jaxrnn needs Python 3.10 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/python -m experiments.train $(ARGS)

test: $(STAMP)
	$(BIN)/python tests/run_shards.py --jobs=$(JOBS) -- -q -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(BIN)/python tests/run_shards.py --jobs=$(JOBS) -- -q $(ARGS)

gradcheck: $(STAMP)
	$(BIN)/python -m experiments.gradcheck $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .jax-test-cache
