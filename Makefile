# Every target bootstraps .venv on first use: a machine with python3 and make is enough.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The experiment `make sweep` runs is sized to this machine: gpu.toml where nvidia-smi lists a
# GPU, else cpu.toml (a 45-minute budget, planned to this CPU's measured speed). EXP= overrides.
GPUS    := $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
MACHINE_EXP = $(if $(filter-out 0,$(GPUS)),experiments/gpu.toml,experiments/cpu.toml)
EXP     ?= $(MACHINE_EXP)
ARCH    ?= bn_dropout
DATA    ?=
EPOCHS  ?= 10
WORKERS ?= 2
HOST    ?= 127.0.0.1
PORT    ?= 5000
ORACLE_PORT ?= 8000
# Database of sweep-distributed's tracking server, e.g. postgresql://user@127.0.0.1:5432/mlflow;
# empty: the project's store, sqlite:///mlruns/mlflow.db. make prints the command it runs, so
# keep a password out of it (PGPASSWORD or ~/.pgpass).
BACKEND ?=
SERVE_PORT ?= 5002
MODEL ?= catdog
# The project's store; MLFLOW_TRACKING_URI (e.g. a tracking server) overrides it.
STORE = $(or $(MLFLOW_TRACKING_URI),sqlite:///mlruns/mlflow.db)

DATA_OPT = $(if $(DATA),--data $(DATA),)
BACKEND_OPT = $(if $(BACKEND),--backend-store-uri '$(BACKEND)',)

.PHONY: install test test-slow test-all train sweep sweep-distributed report ui serve bench data clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install catdog with its dependencies

test: $(STAMP)  ## the default suite (slow tests excluded)
	$(BIN)/python -m pytest -m "not slow" -q --durations=15

test-slow: $(STAMP)  ## slow tests: subprocess resume, distributed sweep, model serving
	$(BIN)/python -m pytest -m slow -q --durations=15

test-all: $(STAMP)  ## every test
	$(BIN)/python -m pytest -q --durations=15

data: $(STAMP)  ## download the data (Kaggle with credentials, else PetImages) and prepare it
	$(BIN)/catdog data download
	$(BIN)/catdog data prepare $$(ls -t data/*.zip | head -1)

train: $(STAMP)  ## one tracked run: make train ARCH=bn_dropout DATA=path EPOCHS=2
	$(BIN)/catdog train --arch $(ARCH) $(DATA_OPT) --epochs $(EPOCHS)

sweep: $(STAMP)  ## the main job, sized to this machine: make sweep [EXP=...] [DATA=path]
	@echo "make sweep: $(EXP) ($(if $(filter $(origin EXP),command line environment),chosen with EXP=,$(if $(filter-out 0,$(GPUS)),$(GPUS) GPU(s) found,no GPU found: the CPU-sized experiment; EXP=experiments/gpu.toml for a GPU machine)))"
	$(BIN)/catdog sweep $(EXP) $(DATA_OPT) --register

sweep-distributed: $(STAMP)  ## tracking server (BACKEND=postgresql://...) + KerasTuner chief + WORKERS workers on this machine
	$(BIN)/catdog distributed $(EXP) $(DATA_OPT) --workers $(WORKERS) --oracle-port $(ORACLE_PORT) $(BACKEND_OPT)

report: $(STAMP)  ## the latest sweep's report: one self-contained HTML file in reports/
	$(BIN)/catdog report

ui: $(STAMP)  ## MLflow UI for the project's store on http://127.0.0.1:5000
	mkdir -p mlruns
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --default-artifact-root ./mlruns/artifacts --host $(HOST) --port $(PORT)

serve: $(STAMP)  ## serve models:/catdog@champion on http://127.0.0.1:5002 (POST /invocations)
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=$(STORE) MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false $(BIN)/mlflow models serve -m "models:/$(MODEL)@champion" --env-manager local -h $(HOST) -p $(SERVE_PORT)

bench: $(STAMP)  ## performance benchmark on ../shared/data/dogs-vs-cats-mini (or DATA=)
	$(BIN)/python -m benchmarks $(DATA_OPT)

clean:  ## remove tuner state, caches and build files (keeps mlruns/ and data/)
	rm -rf .tuner .pytest_cache build dist *.egg-info data/cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
