# One entry point per job a newcomer guesses: demo, test, lint, build, bench, deploy.
PY ?= $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
B ?=

.PHONY: demo test pytest lint build bench deploy template services

demo:
	PY=$(PY) tools/demo-prereqs.sh
	$(PY) -m localcloud.demo

# Everything CI checks: linters, then every test (unit, integration, e2e).
test: lint pytest

pytest:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy
	cfn-lint template.yaml
	sam validate --lint
	shellcheck tools/*.sh .ci/run

build:
	sam build

bench:
	$(PY) -m benchmarks $(B)

deploy:
	sam build && sam deploy --guided

services:
	tools/services.sh start
