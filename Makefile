# make train: set up .venv and train configs/mnist.yaml.  make test: set up .venv and run the tests.
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= configs/mnist.yaml
ARGS   ?=
PYTEST_ARGS ?=
BIN    := $(VENV)/bin

.PHONY: setup train test test-fast test-slow test-experiments mutate clean

setup: $(VENV)/.installed

# Reinstalled when pyproject.toml changes.  torch comes from PyPI's default build (it runs on CPU too).
# The postgres extra is the driver the shared-study test needs (it also needs the PostgreSQL server
# programs, which .ci/run installs; without them that test is skipped).  The export extra: mlp export
# --format onnx and onnxruntime, which its test runs.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,postgres,export]'
	touch $@

train: setup
	$(BIN)/mlp train --config $(CONFIG) $(ARGS)

# Everything but the built-in experiments (test-experiments), the real-data tests too when
# MLP_DATA_ROOT holds MNIST (skipped otherwise).  Two tests at a time (pytest-xdist), each
# single-threaded: most of a test's time is starting processes (docs/speed.md).
XDIST ?= -n 2
test: setup
	$(BIN)/python -m pytest $(XDIST) -m "not experiments" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest $(XDIST) -m "slow and not experiments" $(PYTEST_ARGS)

# Mutation testing (docs/testing.md): MUTATE_ARGS="--only report" for one module's mutations.
mutate: setup
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/python scripts/mutate.py $(MUTATE_ARGS)

# The built-in experiments (configs/experiments/, docs/experiments.md) on the real MNIST: each claim's verdict.
test-experiments: setup
	$(BIN)/python -m pytest -m experiments $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
