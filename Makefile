# Two commands do everything: `make run` (the main job on the bundled synthetic sample) and `make test`.
# Each installs what it needs into a virtual environment (.venv) first, once:
#   make setup       cropseg and its dependencies, no PyTorch (what `make run` needs; the default classifier is KNN)
#   make setup-dev   + the test and lint tools (pytest, ruff, mypy)
#   make setup-deep  + the optional extra `deep` (PyTorch, segmentation-models-pytorch: classifier=unet)
# `make test` installs all three (the U-Net's tests need PyTorch); `make lint` the first two.
# --no-compile: Python compiles the modules a command imports when it first imports them, instead of pip
# compiling every module of every dependency up front (275 MB of .pyc files, most never imported).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev
STAMP_DEEP := $(VENV)/.installed-deep
# the MLflow UI (`make ui`): the store `make run` writes, on this port
UI_STORE ?= sqlite:///mlflow.db
UI_PORT ?= 5000

.PHONY: setup setup-dev setup-deep run ui test test-fast lint clean

setup: $(STAMP)
setup-dev: $(STAMP_DEV)
setup-deep: $(STAMP_DEEP)

$(STAMP): pyproject.toml
	@echo "cropseg setup [1/4]: virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "cropseg setup [2/4]: upgrading pip"
	$(BIN)/python -m pip install --upgrade --progress-bar on pip
	@echo "cropseg setup [3/4]: installing cropseg (editable: pkgs/cropseg -> framework/) with its dependencies (no PyTorch: make setup-deep)"
	$(BIN)/python -m pip install --progress-bar on --no-compile -e .
	@echo "cropseg setup [4/4]: compiling the KNN kernels ahead (numba, once)"
	$(BIN)/python -m cropseg.neighbors
	touch $(STAMP)

$(STAMP_DEV): $(STAMP)
	@echo "cropseg setup-dev: the test and lint tools"
	$(BIN)/python -m pip install --progress-bar on -e '.[test,lint]'
	touch $(STAMP_DEV)

$(STAMP_DEEP): $(STAMP)
	@echo "cropseg setup-deep: the optional extra deep (PyTorch, torchvision, segmentation-models-pytorch)"
	$(BIN)/python -m pip install --progress-bar on -e '.[deep]'
	touch $(STAMP_DEEP)

run: $(STAMP)
	$(BIN)/cropseg $(ARGS)

# the MLflow UI on the store runs write by default (Ctrl-C stops it); `cropseg` prints the experiment's URL
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri $(UI_STORE) --host 127.0.0.1 --port $(UI_PORT)

# everything (the CI command); `make test-fast` leaves out the end-to-end runs marked slow. Both run the tests
# on TEST_WORKERS processes (pytest-xdist; a module's tests stay on one worker, so its module-scoped runs are
# shared); TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: $(STAMP_DEV) $(STAMP_DEEP)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP_DEV) $(STAMP_DEEP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# ruff (lint + format check) over the repository, mypy over framework/; configured in pyproject.toml
lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check .

# everything a run, a sweep, `cropseg compare`, `cropseg predict` (the README's --output-dir predictions/...) or
# the example plugin's build writes into the clone
clean:
	rm -rf outputs multirun compare predictions .cache mlflow.db mlflow.db.lock mlartifacts mlruns
	rm -rf examples/cropseg-nearest-centroid/build examples/cropseg-nearest-centroid/*.egg-info
