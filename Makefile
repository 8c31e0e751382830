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
	$(BIN)/pip install --quiet -e ".[models,dev]"
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

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
