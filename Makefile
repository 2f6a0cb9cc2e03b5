# greenlight.deploy — developer entry points. README.md documents `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: help venv testbed test lint sanity unit demo demo-down bench clean changelog

help:
	@echo "make demo   - set up this machine and run the demo (server container + deploys)"
	@echo "make test   - set up this machine and run every test (lint, unit, integration, molecule)"
	@echo "make bench  - zero-downtime and timing benchmarks (writes docs/benchmarks.md)"

# Virtualenv with the pinned controller packages and the bench's (bench/requirements.txt: the
# charts of `make bench`, also drawn by a unit test); rebuilt only when requirements change.
$(VENV)/.installed: requirements.txt examples/django-app/requirements-test.txt bench/requirements.txt
	@bash testbed/host-preflight.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -r requirements.txt -r examples/django-app/requirements-test.txt -r bench/requirements.txt
	@mkdir -p .collections/ansible_collections/greenlight
	@ln -sfn $(CURDIR) .collections/ansible_collections/greenlight/deploy
	@touch $@

venv: $(VENV)/.installed

testbed: venv
	@bash testbed/up.sh

lint: venv
	$(PY) -m pytest -q tests/lint $(PYTEST_ARGS)

# ansible-test sanity on the built collection (also part of lint and test; tests/lint/test_sanity.py).
sanity: venv
	$(PY) -m pytest -q tests/lint/test_sanity.py $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# The sanity test's virtualenvs are made in the background while the test bed comes up (minutes of
# pip installs on a fresh machine that would otherwise add to the suite's time).
test: venv
	@mkdir -p .testbed; PYTHONPATH=tests $(PY) tests/lint/test_sanity.py > .testbed/sanity-prime.log 2>&1 & prime=$$!; \
	  bash testbed/up.sh; status=$$?; wait $$prime || echo "sanity: priming its virtualenvs failed (.testbed/sanity-prime.log)"; exit $$status
	$(PY) -m pytest $(PYTEST_ARGS)

# CHANGELOG.md and changelogs/changelog.yml from changelogs/fragments/ (antsibull-changelog): adds the
# fragments not yet in it to the release of galaxy.yml's version (bump that version after tagging a release)
# and refreshes edited ones. tests/lint/test_changelog.py fails until this has run after a fragment changed.
changelog: venv
	$(VENV)/bin/antsibull-changelog release --update-existing --refresh-fragments without-archives --reload-plugins

demo: testbed
	@bash testbed/demo.sh

demo-down:
	@docker rm -f greenlight-demo >/dev/null 2>&1 || true
	@docker volume rm greenlight-demo-docker >/dev/null 2>&1 || true

bench: testbed
	$(PY) bench/run.py

clean: demo-down
	rm -rf $(VENV) .collections .pytest_cache
