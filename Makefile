# Consent Ledger: every target sets up what it needs (venv, install, migrations) by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 2

.PHONY: run test lint typecheck pytest openapi migrate clean bench bench-quick fuzz soak screenshots lock translations

# Every package comes from requirements/lock.txt, hash-checked; the project itself is then
# linked in without resolving anything (setuptools, its build backend, is in the lock too).
$(STAMP): pyproject.toml requirements/lock.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# After changing dependencies in pyproject.toml (LOCK_ARGS=--upgrade moves every pin to the newest).
lock: $(STAMP)
	$(BIN)/python requirements/lock.py $(LOCK_ARGS)

migrate: $(STAMP)
	$(BIN)/consent db upgrade

run: migrate
	@echo
	@echo "Consent Ledger on http://$(HOST):$(PORT)  (database: $${CONSENT_DATABASE_URL:-$${CONSENT_INSTANCE_PATH:-instance}/consent.db})"
	@echo "Create a key in another shell:  $(BIN)/consent keys create --role admin --name me"
	@echo "Then:  curl -H \"Authorization: Bearer <token>\" http://$(HOST):$(PORT)/v1/purposes"
	@echo "A user token for /v1/me:  $(BIN)/consent tokens mint --user alice"
	@echo "Then:  curl -H \"Authorization: Bearer <user token>\" http://$(HOST):$(PORT)/v1/me"
	@echo "(DEVELOPMENT ONLY: without CONSENT_USER_TOKEN_JWKS or CONSENT_USER_TOKEN_SECRET, user tokens"
	@echo " are checked with a development secret made and kept in the instance folder.)"
	@echo
	CONSENT_BIND=$(HOST):$(PORT) CONSENT_WORKERS=$(WORKERS) CONSENT_ACCESS_LOG=- \
		CONSENT_USER_TOKEN_DEV_SECRET=1 \
		$(BIN)/gunicorn --config python:service.runtime.gunicorn_conf

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# Longer runs of the bounded fuzzing and load tests that `make test` includes.
fuzz: $(STAMP)
	CONSENT_FUZZ_EXAMPLES=$${CONSENT_FUZZ_EXAMPLES:-300} \
		CONSENT_FUZZ_ROLES=$${CONSENT_FUZZ_ROLES:-app,pipeline,support,admin} $(BIN)/pytest -q tests/fuzz

soak: $(STAMP)
	CONSENT_SOAK_SECONDS=$${CONSENT_SOAK_SECONDS:-120} $(BIN)/pytest -q -s tests/load

# The /me page's catalogues: extracts its English texts (babel.cfg names where they are), merges
# them into each language's .po (new ones come untranslated, and tests/unit/test_translations.py
# fails until they are translated) and compiles the .mo files the wheel ships.
TRANSLATIONS := service/web/me/translations
translations: $(STAMP)
	$(BIN)/pybabel --quiet extract -F babel.cfg --add-location=file --sort-by-file --no-wrap \
		--project=consent-ledger -o $(VENV)/messages.pot .
	$(BIN)/pybabel --quiet update -i $(VENV)/messages.pot -d $(TRANSLATIONS) --no-wrap \
		--no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d $(TRANSLATIONS) --statistics

openapi: $(STAMP)
	$(BIN)/flask --app service openapi write --format yaml openapi.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Seeds fresh databases, serves them as `make run` does, measures every workload beside its
# baseline and writes bench/RESULTS.md. Needs PostgreSQL on 127.0.0.1:5432 and wrk.
bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# Re-takes docs/console/*.png and docs/me/*.png (shown in the README) from a run of the browser
# tests of the console and of the /me page.
screenshots: $(STAMP)
	CONSENT_SCREENSHOTS=docs $(BIN)/pytest -q tests/browser
