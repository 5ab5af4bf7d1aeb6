# Entry points for people and CI. `make test` is what CI runs (see .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: help install tools lint test test-unit test-connector test-e2e test-chart crds cluster-up cluster-down demo

help:
	@echo "make demo          run the operator on a local control plane and emulated clouds"
	@echo "make test          lint, then every test tier (builds the Go tools on first use)"
	@echo "make lint          ruff and mypy --strict"
	@echo "make crds          regenerate crds/ from the API models"
	@echo "make tools         build etcd, kube-apiserver, kube-controller-manager, kubectl, helm and prometheus"
	@echo "make cluster-up    start a local control plane in the background (prints KUBECONFIG and TOOLS_BIN)"
	@echo "make cluster-down  stop it and remove its state"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

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
	$(BIN)/skyfleet crds -o crds
	cp crds/skyfleet.io_*.yaml charts/skyfleet/files/crds/

cluster-up: $(STAMP) tools
	@$(BIN)/python -m skyfleet.testing.controlplane up

cluster-down: $(STAMP)
	@$(BIN)/python -m skyfleet.testing.controlplane down

demo: $(STAMP) tools
	$(BIN)/skyfleet demo $(if $(ONCE),--once,)
