# Entry points for people and CI. `make test` is what CI runs (see .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-test.lock | sha256sum | cut -c1-12)

.PHONY: help install lock tools lint test test-unit test-connector test-e2e test-chart crds cluster-up cluster-down demo

help:
	@echo "make demo          run the operator on a local control plane and emulated clouds"
	@echo "make test          lint, then every test tier (builds the Go tools on first use)"
	@echo "make lint          ruff and mypy --strict"
	@echo "make crds          regenerate crds/ from the API models"
	@echo "make lock          re-resolve requirements.lock and requirements-test.lock (hashed pins)"
	@echo "make tools         build etcd, kube-apiserver, kube-controller-manager, kubectl, helm and prometheus"
	@echo "make cluster-up    start a local control plane in the background (prints KUBECONFIG and TOOLS_BIN)"
	@echo "make cluster-down  stop it and remove its state"

# Every dependency comes from requirements-test.lock, pinned with hashes; Skyfleet itself is then
# installed editable without resolving anything (make lock refreshes the locks).
$(STAMP): pyproject.toml requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-test.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

# Re-resolve both locks from pyproject.toml (runtime for the image, runtime + test for make and CI).
lock:
	$(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install -q uv
	$(VENV)-lock/bin/uv pip compile pyproject.toml --python-version 3.11 --universal --generate-hashes -q -o requirements.lock
	$(VENV)-lock/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 --universal --generate-hashes -q -o requirements-test.lock

install: $(STAMP)

tools:
	@bash tools/build.sh >/dev/null
	@bash tools/prometheus/build.sh >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) tools lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-connector: $(STAMP)
	$(BIN)/pytest -m connector $(PYTEST_ARGS)

test-e2e: $(STAMP) tools
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test-chart: $(STAMP) tools
	$(BIN)/pytest -m chart $(PYTEST_ARGS)

crds: $(STAMP)
	$(BIN)/skyfleet crds -o crds --reference docs/api-reference.md
	cp crds/skyfleet.io_*.yaml charts/skyfleet/files/crds/

cluster-up: $(STAMP) tools
	@$(BIN)/python -m skyfleet.testing.controlplane up

cluster-down: $(STAMP)
	@$(BIN)/python -m skyfleet.testing.controlplane down

demo: $(STAMP) tools
	$(BIN)/skyfleet demo $(if $(ONCE),--once,)
