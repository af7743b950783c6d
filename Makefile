# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DEBUG ?= true

.PHONY: run test install migrate lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

## Set up and serve the full stack: LiteLLM on 127.0.0.1:4000 (mock models unless a provider key
## is set) and aiproxy on 127.0.0.1:8000 under gunicorn (SQLite unless DATABASE_URL is set).
## `exec`: the script is make's own child, so the SIGTERM make passes on reaches it.
run: migrate
	PYTHON=$(PYTHON) exec scripts/run_local.sh

## Run the test suite (SQLite unless DATABASE_URL is set; CI sets PostgreSQL).
test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
