# Two commands on a fresh machine:
#   make run    set up .venv and open the app on its built-in demo
#   make test   set up .venv and run every check and test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt

.PHONY: run test lint screenshots bench dist clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# constraints.txt pins exactly what CI tests (torch 2.13.0 is the CPU build on these machines).
$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[train-core,dev]'
	touch $@

# The app for people: `train` adds bitsandbytes (QLoRA) where it installs.
$(VENV)/.installed-run: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[train]'
	touch $@

run: $(VENV)/.installed-run
	$(VENV)/bin/finetune-desk --demo

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -n 2 --dist loadgroup --durations=20

screenshots: $(VENV)/.installed-test
	$(PY) packaging/screenshots.py

bench: $(VENV)/.installed-test
	$(PY) bench/trainer_overhead.py
	$(PY) bench/ingest.py
	$(PY) bench/gui_startup.py
	$(PY) bench/chart.py
	$(PY) bench/history_scale.py

# The frozen app (PyInstaller onedir, no ML stack): dist/finetune-desk/finetune-desk, and on
# Linux dist/finetune-desk-<version>-linux-<machine>.tar.gz (with a .desktop file and the icon).
# Windows and macOS installers: packaging/windows/, packaging/macos/ (see the README).
dist: $(VENV)/.installed-test
	$(VENV)/bin/pyinstaller --noconfirm --clean packaging/finetune-desk.spec
	QT_QPA_PLATFORM=offscreen dist/finetune-desk/finetune-desk --self-test
	du -sh dist/finetune-desk
	if [ "$$(uname -s)" = Linux ]; then $(PY) packaging/linux/tarball.py dist/finetune-desk --out dist; fi

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
