# ClinicDesk: `make run` starts the application with demo data; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: run test bench chaos load lint format venv stop-db

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ClinicDesk needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(PY) manage.py serve

test: venv
	$(PY) -m pytest --create-db

bench: venv
	$(PY) manage.py bench

# Load: 50 staff and 10x the demo's intake, gunicorn + qcluster on its own database (~11 min).
load: venv
	$(PY) manage.py load

# Faults: PostgreSQL restarted under load, job clusters killed mid-work (own database, ~10 min).
chaos: venv
	$(PY) manage.py chaos

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

stop-db: venv
	$(PY) -m clinicdesk.embedded_db stop
