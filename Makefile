# Two commands on a fresh machine:
#   make run    set up .venv and open the app on its built-in demo
#   make test   set up .venv and run every check and test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint screenshots bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins exactly what CI tests (torch 2.13.0 is the CPU build on these machines).
	$(PY) -m pip install -q -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/finetune-desk --demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -n 2 --durations=15

screenshots: $(STAMP)
	$(PY) packaging/screenshots.py

bench: $(STAMP)
	$(PY) bench/trainer_overhead.py
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
