# One entry point per job a newcomer guesses: demo, test, lint, build, bench, faults, deploy.
# demo, test and bench set the machine up first (tools/bootstrap.sh: system packages, .venv from
# uv.lock, the Docker engine); a second run installs nothing.
PY := .venv/bin/python
B ?=
# The virtualenv's tools (cfn-lint, sam) and the python3.12 sam build needs come first.
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/.tools/py312:$(PATH)
# Sub-targets skip the bootstrap when a parent target has just run it.
bootstrap = $(if $(BOOTSTRAPPED),,tools/bootstrap.sh $(1))

.PHONY: demo test pytest lint security build bench faults host-faults deploy template services stop-services lock up down mutation

demo:
	$(call bootstrap,demo)
	$(PY) -m localcloud.stories.demo

# The playground: a local cloud left running in the background (web on 3 hosts; README,
# "The playground"). up writes .localcloud/env; down removes everything up created.
up:
	$(call bootstrap,demo)
	$(PY) -m localcloud.stories.playground up

down:
	$(call bootstrap,demo)
	$(PY) -m localcloud.stories.playground down

# Everything CI checks: linters, the SAM build, every test (unit, integration, e2e), then the
# fault-injection suite, which must converge in every case.
test:
	$(call bootstrap,test)
	$(MAKE) --no-print-directory lint build pytest BOOTSTRAPPED=1
	$(MAKE) --no-print-directory faults F=0 BOOTSTRAPPED=1

pytest:
	$(call bootstrap,test)
	$(PY) -m pytest -q

lint:
	$(call bootstrap,test)
	$(MAKE) --no-print-directory template BOOTSTRAPPED=1
	$(PY) -m ruff check .
	$(PY) -m mypy
	cfn-lint build/template.yaml
	sam validate --lint -t build/template.yaml
	shellcheck tools/*.sh .ci/run localcloud/hosts/*.sh
	$(MAKE) --no-print-directory security BOOTSTRAPPED=1

# Static security checks of the deployable template: zero failures; every skip carries its reason
# in the resource's Metadata (docs/architecture.md, Security). checkov has its own virtualenv and
# runs offline (no platform download or guideline lookup).
security:
	$(call bootstrap,test)
	$(MAKE) --no-print-directory template BOOTSTRAPPED=1
	BC_SKIP_MAPPING=TRUE .venv-checkov/bin/checkov -f build/template.yaml --framework cloudformation \
	  --skip-download --quiet --compact

# The deployable template: template.yaml (hand-written) with host/agent.py embedded in the swap
# document. build, deploy, the local cloud and the tests use build/template.yaml.
template:
	$(call bootstrap,demo)
	$(PY) tools/render_template.py

build:
	$(call bootstrap,test)
	$(MAKE) --no-print-directory template BOOTSTRAPPED=1
	sam build -t build/template.yaml

bench:
	$(call bootstrap,bench)
	PYTHONPATH=$(CURDIR)/layers/deployer:$(CURDIR) $(PY) -m benchmarks $(B)

# Fault injection (docs/faults.md): every AWS call of every flow fails once, kills the invocation
# or is delivered twice; after the platform's own recovery the invariant must hold. Ends with
# `FAULTS {json}`. It fails when its checker self-test fails, or when more cases than F=<n> do not
# converge; `make test` (CI) runs it with F=0.
F ?=
faults:
	$(call bootstrap,test)
	PYTHONPATH=layers/deployer:. $(PY) -m tests.faults $(if $(F),--max-not-converged $(F))

# Host faults (docs/agent.md, "Host faults"): on the real engine, nginx and registry, with load,
# the agent's process group is SIGKILLed at every phase of a swap, a boot and a rollback, then
# the same command runs again; nginx is killed (master only, and whole), the app container is
# killed and crash-loops. Ends with `HOSTFAULTS {json}`; fails when a case does not recover, a
# container is left over or a request fails outside a deliberate outage. HF="<case> ..." runs
# those cases only. CI (`make test`) runs a short slice: tests/host_faults/test_host_faults.py.
HF ?=
host-faults:
	$(call bootstrap,test)
	PYTHONPATH=layers/deployer:. $(PY) -m tests.host_faults $(foreach c,$(HF),--case $(c))

deploy: build
	sam deploy --guided

services:
	tools/services.sh start

stop-services:
	tools/services.sh stop

# After changing a dependency in pyproject.toml: re-resolve uv.lock and derive the Lambda layer's
# requirements from it (sam build installs those into the layer, hashes checked).
lock:
	tools/bootstrap.sh demo
	.tools/uv/bin/uv lock
	.tools/uv/bin/uv export --frozen --no-dev --no-emit-project --format requirements-txt \
	  --no-header -o layers/deployer/requirements.txt

# Mutation testing of the core's decision modules (docs/mutation.md): mutmut over each module of
# DECISION_MODULES in tools/mutation.py, against its fast test files, two mutants at a time.
# M=<module path> runs one module. Ends with `MUTATION {"killed": n, "survived": n, ...}`;
# survivors go to build/mutation-survivors.txt. Not part of `make test` (minutes, not seconds).
M ?=
mutation:
	$(call bootstrap,mutation)
	.venv-mutation/bin/python tools/mutation.py $(if $(M),--module $(M))
