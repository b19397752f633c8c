# The README's commands. `make demo`: set up, generate a sample week, run it, open the UI.
# `make test`: set up and pass the tests (what CI runs).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_METERS ?= 500
DEMO_DAYS ?= 7
PORT ?= 3000

.PHONY: setup demo run test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/greenstream generate --meters $(DEMO_METERS) --days $(DEMO_DAYS)
	$(BIN)/greenstream run
	@echo "Opening the Dagster UI on http://127.0.0.1:$(PORT) (the landing-zone sensor is on). Ctrl-C stops it."
	env --default-signal=INT,TERM $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

run: setup
	$(BIN)/greenstream run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest

clean:
	rm -rf data .dagster_home
