# Two commands do everything: `make run` (the main job on the bundled synthetic sample) and `make test`.
# Each installs what it needs into a virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,deep]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cropseg $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf outputs multirun .cache mlflow.db mlartifacts
