# Two commands do everything: `make run` (the main job on the bundled synthetic sample) and `make test`.
# Each installs what it needs into a virtual environment (.venv) first (`make setup`, once).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the editable install's import path: links named like the import packages (cropseg -> framework/), put on
# sys.path by a .pth file, so a folder named `cropseg` in the working directory (the clone, seen from its
# parent folder) cannot shadow the package as a namespace package
LINKS := $(abspath $(VENV))/cropseg-path

.PHONY: setup run test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "cropseg setup [1/5]: virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "cropseg setup [2/5]: upgrading pip"
	$(BIN)/python -m pip install --upgrade --progress-bar on pip
	@echo "cropseg setup [3/5]: installing cropseg (editable) with its dependencies and the test and lint tools"
	$(BIN)/python -m pip install --progress-bar on -e '.[test,lint]'
	@echo "cropseg setup [4/5]: import path $(LINKS) (cropseg -> framework/, cropseg_plugins -> plugins/)"
	mkdir -p $(LINKS)
	ln -sfn $(CURDIR)/framework $(LINKS)/cropseg
	ln -sfn $(CURDIR)/plugins $(LINKS)/cropseg_plugins
	echo $(LINKS) > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/cropseg-path.pth"
	@echo "cropseg setup [5/5]: compiling the KNN kernels ahead (numba, once)"
	$(BIN)/python -m cropseg.neighbors
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cropseg $(ARGS)

# everything (the CI command); `make test-fast` leaves out the end-to-end runs marked slow
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# ruff (lint + format check) over the repository, mypy over framework/; configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# everything a run, a sweep, `cropseg compare` or `cropseg predict` writes into the working directory
clean:
	rm -rf outputs multirun compare .cache mlflow.db mlflow.db.lock mlartifacts mlruns
