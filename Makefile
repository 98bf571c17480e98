# One obvious command per task. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLSERVER_VENV := .venv-mlserver
# The venv's tools first, so dvc stages find `dlzoo`; no telemetry from DVC or MLflow.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TF_CPP_MIN_LOG_LEVEL := 2

.DEFAULT_GOAL := help
.PHONY: help setup system-packages run full ui sweep serve bench-serve mlserver-venv test test-all lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: system-packages $(STAMP) ## create .venv and install dlzoo with its dev extras (and Chromium, PostgreSQL)

system-packages: ## Debian's chromium and postgresql, which the tests start (apt-get, if missing)
	@bash ci/system_packages.sh

# uv installs the same resolution as pip, downloading and unpacking in parallel: a cold set-up
# here took 1 min 19 s against pip's 5.5 min (most of it TensorFlow's 3 GB).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.13,<0.14'
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

run: setup ## run the pipeline (dvc repro) on params.yaml's profile: demo by default, offline
	$(BIN)/dvc repro

# The real data from the network, or from a mirror directory: MIRROR=dir. A mirror file that is not
# the upstream one is refused unless ACCEPT_SHA256 accepts its hash ('cifar10=<sha256> ...'; the
# refusal prints the pair). Both become -S params, so params.yaml and dvc.lock record them.
MIRROR ?=
ACCEPT_SHA256 ?=
full: setup ## run the pipeline on the real data: make full [MIRROR=dir] [ACCEPT_SHA256='set=sha256 ...']
	$(BIN)/dvc exp run -S data.profile=full $(if $(MIRROR),-S 'data.mirror=$(MIRROR)') \
	  $(foreach pair,$(ACCEPT_SHA256),-S 'data.mirror_accepted_sha256.$(pair)')

ui: setup ## the MLflow UI on the local store; prints each experiment's URL (its training runs)
	@MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/dlzoo ui-urls --url http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

SWEEP_EXPERIMENT ?= blobs_mlp
SWEEP ?= experiments.$(SWEEP_EXPERIMENT).training.learning_rate=0.003,0.01,0.03
sweep: setup ## queue a grid with dvc exp run --queue -S, run it on 2 workers: SWEEP='key=a,b' make sweep
	$(BIN)/dvc exp run --queue -S '$(SWEEP)'
	$(BIN)/dvc queue start -j 2
	$(BIN)/python ci/wait_for_queue.py
	$(BIN)/dvc exp show --only-changed --drop 'Created|State|Executor'

serve: setup ## serve models/repository over the Open Inference Protocol (REST :8000, gRPC :8001)
	$(BIN)/dlzoo serve --repository models/repository --host 127.0.0.1 --port 8000 --grpc-port 8001

bench-serve: setup mlserver-venv ## latency/throughput: raw ONNX Runtime vs dlzoo serve vs MLServer (after make run)
	$(BIN)/python bench/serve.py --repository models/repository

mlserver-venv: ## Seldon MLServer 1.7 + onnxruntime in .venv-mlserver (its own FastAPI pin), for bench-serve
	@test -f $(MLSERVER_VENV)/.installed || { \
	  $(PYTHON) -m venv $(MLSERVER_VENV) && \
	  $(MLSERVER_VENV)/bin/pip install --quiet --upgrade pip && \
	  $(MLSERVER_VENV)/bin/pip install --quiet 'mlserver==1.7.*' onnxruntime numpy && \
	  touch $(MLSERVER_VENV)/.installed; }
	$(MLSERVER_VENV)/bin/mlserver --version

test: setup ## run the default (fast) test suite
	$(BIN)/pytest

test-all: setup ## run every test, the slow ones too
	$(BIN)/pytest -m 'not contract'

lint: setup ## check style with ruff
	$(BIN)/ruff check src tests bench ci
	$(BIN)/ruff format --check src tests bench ci

format: setup ## format and autofix with ruff
	$(BIN)/ruff format src tests bench ci
	$(BIN)/ruff check --fix src tests bench ci

clean: ## remove pipeline outputs (data, models, plots) but keep DVC's cache and MLflow's store
	rm -rf data/raw data/processed plots $(filter-out models/.gitkeep,$(wildcard models/*))
