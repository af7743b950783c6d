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

## Set up and serve aiproxy on 127.0.0.1:8000 (SQLite unless DATABASE_URL is set).
run: migrate
	$(BIN)/python manage.py ensure_demo_setup
	$(BIN)/uvicorn aiproxy.asgi:application --host 127.0.0.1 --port 8000

## Run the test suite (SQLite unless DATABASE_URL is set; CI sets PostgreSQL).
test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
