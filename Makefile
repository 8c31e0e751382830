# fedprofile: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: setup demo deploy-demo compose-setup test lint sim-retail clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch first, so opacus does not pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[models,dev,sql]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/fedprofile sim --dataset bank --partners 5 --task pipeline --target y --k 6 \
		--epsilon 1 --seed 0 --out runs/demo --state-dir runs/demo/state
	@echo "Open runs/demo/segments/report.html and runs/demo/response/report.html"

deploy-demo: setup
	$(BIN)/python -m fedprofile.deploy.demo

compose-setup: setup
	$(BIN)/python -m fedprofile.deploy.compose_setup

sim-retail: setup
	$(BIN)/fedprofile sim --dataset retail --partners 6 --k 4 --epsilon 1 --seed 0 --out runs/retail

test: setup
	$(BIN)/python -m pytest

# Architecture (import-linter) and types (mypy) are checked on the package as it ships: the
# wheel's tree, where the role folders are subpackages of fedprofile.
WHEEL_TREE := build/wheel-tree

lint: setup
	$(BIN)/ruff check .
	rm -rf build/dist $(WHEEL_TREE)
	$(BIN)/python -m build --wheel --no-isolation --outdir build/dist . > /dev/null
	$(BIN)/python -m zipfile -e build/dist/fedprofile-*.whl $(WHEEL_TREE)
	cd $(WHEEL_TREE) && $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml
	cd $(WHEEL_TREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p fedprofile

clean:
	rm -rf runs build .pytest_cache .ruff_cache .mypy_cache
