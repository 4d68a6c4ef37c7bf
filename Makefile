# hecht: `make run` starts everything locally, `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv run test unit integration e2e reliability bench bench-full stack-start stack-stop stack-wipe lint clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# The portal's catalogues: each .mo is compiled from its .po whenever that changes
# (the .mo files are not in git). Every target that runs code depends on them.
PO := $(wildcard services/portal/translations/*/LC_MESSAGES/messages.po)
MO := $(PO:.po=.mo)
%.mo: %.po $(STAMP)
	$(VENV)/bin/pybabel -q compile -i $< -o $@
READY := $(STAMP) $(MO)

venv: $(READY) ## create the virtualenv with the pinned dependencies

run: $(READY) ## fetch what is missing, start Kafka + SecantusDB + SMTP sink, the services and workers
	scripts/run.sh

test: $(READY) ## the whole suite against a real local stack on its own ports
	scripts/test.sh tests

unit: $(READY) ## fast tests without I/O
	$(VENV)/bin/python -m pytest tests/unit -q

integration: $(READY) ## tests against the real stack (no e2e, no fault injection)
	scripts/test.sh tests/unit tests/integration tests/deploy

e2e: $(READY) ## the end-to-end story with every part as a real process
	scripts/test.sh tests/e2e

reliability: $(READY) ## fault injection: kill -9 Kafka, the database server, workers
	scripts/test.sh tests/reliability

bench: $(READY) ## benchmarks, quick profile (results in bench/results/)
	scripts/bench.sh quick

bench-full: $(READY) ## benchmarks, full profile
	scripts/bench.sh full

stack-start: $(READY) ## start only the local stack (dev ports)
	deploy/local/stack.sh start

stack-stop: ## stop the local stack
	deploy/local/stack.sh stop

stack-wipe: ## stop the local stack and delete its data
	deploy/local/stack.sh wipe

clean: ## remove the virtualenv and local data (the download cache stays)
	-deploy/local/stack.sh wipe
	rm -rf $(VENV) var .pytest_cache
