# Two commands do everything: `make run` (the main job on the bundled synthetic sample) and `make test`.
# Each installs what it needs into a virtual environment (.venv) first (`make setup`, once).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "cropseg setup [1/4]: virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "cropseg setup [2/4]: upgrading pip"
	$(BIN)/python -m pip install --upgrade --progress-bar on pip
	@echo "cropseg setup [3/4]: installing cropseg (editable: pkgs/cropseg -> framework/) with its dependencies the test and lint tools and the deep extra (PyTorch)"
	$(BIN)/python -m pip install --progress-bar on -e '.[test,lint,deep]'
	@echo "cropseg setup [4/4]: compiling the KNN kernels ahead (numba, once)"
	$(BIN)/python -m cropseg.neighbors
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cropseg $(ARGS)

# everything (the CI command); `make test-fast` leaves out the end-to-end runs marked slow. Both run the tests
# on TEST_WORKERS processes (pytest-xdist; a module's tests stay on one worker, so its module-scoped runs are
# shared); TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# ruff (lint + format check) over the repository, mypy over framework/; configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check .

# everything a run, a sweep, `cropseg compare` or `cropseg predict` writes into the working directory
clean:
	rm -rf outputs multirun compare .cache mlflow.db mlflow.db.lock mlartifacts mlruns
