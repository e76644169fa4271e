# Every target bootstraps .venv on first use: a machine with python3 and make is enough.
# scripts/bootstrap-venv first checks PYTHON (3.11 or 3.12, as requires-python says, with venv's
# ensurepip) and says in one sentence what to install or which PYTHON= to name if it is unfit.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The exact versions every install uses (Python 3.11 on Linux x86_64 and aarch64 and macOS arm64,
# every extra): `make lock` upgrades them.
LOCK   := constraints.txt
PIP    := $(BIN)/python -m pip install --quiet -c $(LOCK)

# The experiment `make sweep` runs is sized to this machine: gpu.toml where nvidia-smi lists a
# GPU, else cpu.toml (a 42-minute budget planned to this CPU's measured speed; about 45 minutes
# in all with the install, preparing the photos and registering). EXP= overrides.
GPUS    := $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
HAS_GPU := $(filter-out 0,$(GPUS))
MACHINE_EXP = $(if $(HAS_GPU),experiments/gpu.toml,experiments/cpu.toml)
EXP     ?= $(MACHINE_EXP)
EXP_GIVEN := $(filter command line environment,$(origin EXP))
# sweep-distributed needs a sweep a chief can hand out (the equal-budget `compare` strategy, not
# cpu.toml's focus): gpu.toml on a GPU machine, else cpu-compare.toml. EXP= or DIST_EXP= overrides.
DIST_EXP ?= $(if $(EXP_GIVEN),$(EXP),$(if $(HAS_GPU),experiments/gpu.toml,experiments/cpu-compare.toml))
# Extras of catdog's own install: dev (pytest), and gpu (tensorflow[and-cuda]) where nvidia-smi
# lists a GPU. The stamp names them, so a machine that gains a GPU installs the gpu extra.
comma   := ,
EXTRAS  := dev$(if $(HAS_GPU),$(comma)gpu,)
STAMP   := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PG_STAMP   := $(VENV)/.installed-postgres
DOCS_STAMP := $(VENV)/.installed-docs
ARCH    ?= bn_dropout
DATA    ?=
EPOCHS  ?= 10
WORKERS ?= 2
HOST    ?= 127.0.0.1
PORT    ?= 5000
ORACLE_PORT ?= 8000
# Port of the tracking server make sweep-distributed starts.
TRACKING_PORT ?= 5001
# Database of sweep-distributed's tracking server, e.g. postgresql://user@127.0.0.1:5432/mlflow;
# empty: the project's store, sqlite:///mlruns/mlflow.db. make prints the command it runs, so
# keep a password out of it (PGPASSWORD or ~/.pgpass).
BACKEND ?=
SERVE_PORT ?= 5002
# uvicorn workers of make serve, each a process with the model: MLflow parses, checks and answers
# each request in Python under one interpreter lock, so two put a 2-core machine's both cores to
# it (bench item 8 measures 1 and 2: `python -m benchmarks --only serving`).
SERVE_WORKERS ?= 2
# The registered model make serve answers with: each dataset registers under its own name
# (catdog for Dogs-vs-Cats; `catdog register` prints it). NAME= registers a sweep under another.
MODEL ?= catdog
NAME  ?=
# SEED= another seed for a sweep (its splits' shuffling, weights and search; default 1337): make sweep SEED=7
SEED  ?=
# The project's store; MLFLOW_TRACKING_URI (e.g. a tracking server) overrides it.
# postgresql:// names the driver the postgres extra installs (SQLAlchemy would look for psycopg 3).
STORE = $(subst postgresql://,postgresql+psycopg2://,$(or $(MLFLOW_TRACKING_URI),sqlite:///mlruns/mlflow.db))

DATA_OPT = $(if $(DATA),--data $(DATA),)
NAME_OPT = $(if $(NAME),--name $(NAME),)
SEED_OPT = $(if $(SEED),--seed $(SEED),)
BACKEND_OPT = $(if $(BACKEND),--backend-store-uri '$(BACKEND)',)

.PHONY: install lock lint test test-slow test-all train sweep smoke sweep-distributed report ui serve \
	bench data screenshots clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml $(LOCK)
	sh scripts/bootstrap-venv '$(PYTHON)' $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) -e ".[$(EXTRAS)]"
	touch $@

# The extras only some targets need, each on top of the install above.
$(PG_STAMP): $(STAMP)
	$(PIP) -e ".[$(EXTRAS),postgres]"
	touch $@

$(DOCS_STAMP): $(STAMP)
	$(PIP) -e ".[$(EXTRAS),docs]"
	touch $@

install: $(STAMP)  ## create .venv and install catdog at the versions in constraints.txt (+ gpu extra on a GPU machine)

# One universal lock, resolved by uv for Python 3.11 whatever machine runs it (platform-only
# pins carry environment markers, e.g. the gpu extra's CUDA wheels `; sys_platform == 'linux'`),
# then checked on each of LOCK_PLATFORMS: the locked versions must resolve there from wheels
# alone. LOCK_OPTS= (empty) keeps the current pins and only adds what a changed pyproject.toml
# needs.
LOCK_OPTS ?= --upgrade
LOCK_PLATFORMS := x86_64-manylinux_2_28 aarch64-manylinux_2_28 aarch64-apple-darwin
lock:  ## upgrade constraints.txt to the newest versions pyproject.toml allows; make install then uses them
	sh scripts/bootstrap-venv '$(PYTHON)' $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal $(LOCK_OPTS) --python-version 3.11 \
		--custom-compile-command "make lock" --quiet -o $(LOCK)
	for platform in $(LOCK_PLATFORMS); do \
		$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 --no-build \
			--python-platform $$platform -c $(LOCK) --quiet -o /dev/null || exit 1; \
	done

lint: $(STAMP)  ## ruff: lint and import order, then the formatter's check (pyproject.toml [tool.ruff])
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests run in TEST_WORKERS processes (pytest-xdist): a test's tiny models spend most of their
# time in Python (tracing, MLflow, plots), on one core, so two processes use both.
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal,)
test: $(STAMP)  ## the default suite (slow tests excluded) in TEST_WORKERS=2 processes
	$(BIN)/python -m pytest -m "not slow" -q --durations=25 $(XDIST)

# SLOW picks the slow tests to run: all of them by default; CI (.ci/run) passes
# SLOW="slow and not heavy" to stay within 40 minutes (pyproject.toml's markers say which).
SLOW ?= slow
test-slow: $(PG_STAMP)  ## slow tests: subprocess resume, distributed sweep (PostgreSQL too), model serving
	$(BIN)/python -m pytest -m "$(SLOW)" -q --durations=25 $(XDIST)

test-all: $(PG_STAMP)  ## every test
	$(BIN)/python -m pytest -q --durations=25 $(XDIST)

data: $(STAMP)  ## download the data (Kaggle with credentials, else PetImages) and prepare it
	$(BIN)/catdog data download
	$(BIN)/catdog data prepare $$(ls -t data/*.zip | head -1)

train: $(STAMP)  ## one tracked run: make train ARCH=bn_dropout DATA=path EPOCHS=2
	$(BIN)/catdog train --arch $(ARCH) $(DATA_OPT) --epochs $(EPOCHS)

sweep: $(STAMP)  ## the main job, sized to this machine: make sweep [EXP=...] [DATA=path] [SEED=n]
	@echo "make sweep: $(EXP) ($(if $(filter $(origin EXP),command line environment),chosen with EXP=,$(if $(filter-out 0,$(GPUS)),$(GPUS) GPU(s) found,no GPU found: the CPU-sized experiment; EXP=experiments/gpu.toml for a GPU machine)))"
	$(BIN)/catdog sweep $(EXP) $(DATA_OPT) $(NAME_OPT) $(SEED_OPT) --register

smoke: $(STAMP)  ## the smoke run: every from-scratch architecture, 10 minutes: make smoke [DATA=path]
	$(BIN)/catdog sweep experiments/quick.toml $(DATA_OPT) $(NAME_OPT) $(SEED_OPT) --register

sweep-distributed: $(PG_STAMP)  ## tracking server (BACKEND=postgresql://...) + KerasTuner chief + WORKERS workers: make sweep-distributed [DIST_EXP=...] [DATA=path] [HOST=...]
	$(BIN)/catdog distributed $(DIST_EXP) $(DATA_OPT) $(NAME_OPT) --workers $(WORKERS) --host $(HOST) --oracle-port $(ORACLE_PORT) --tracking-port $(TRACKING_PORT) $(BACKEND_OPT) --register

report: $(STAMP)  ## the latest sweep's report: one self-contained HTML file in reports/
	$(BIN)/catdog report

ui: $(STAMP)  ## MLflow UI for the project's store on http://127.0.0.1:5000
	mkdir -p mlruns
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri $(STORE) --default-artifact-root ./mlruns/artifacts --artifacts-destination ./mlruns/artifacts --host $(HOST) --port $(PORT)

serve: $(STAMP)  ## serve models:/catdog@champion on http://127.0.0.1:5002 (POST /invocations): make serve [MODEL=another registered name]
	@echo "make serve: models:/$(MODEL)@champion$(if $(filter command line environment,$(origin MODEL)),, (the default; MODEL=name serves another dataset's champion))"
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=$(STORE) MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false $(BIN)/mlflow models serve -m "models:/$(MODEL)@champion" --env-manager local -h $(HOST) -p $(SERVE_PORT) --workers $(SERVE_WORKERS)

bench: $(STAMP)  ## the performance benchmark (python -m benchmarks): make bench [DATA=path]
	$(BIN)/python -m benchmarks $(DATA_OPT)

# SHOTS_STORE= the store of a finished sweep (default: the project's), SHOTS_OUT= the folder.
SHOTS_STORE ?= $(STORE)
SHOTS_OUT   ?= docs
screenshots: $(DOCS_STAMP)  ## PNGs of the MLflow UI (runs tree, comparison) and the report, into docs/
	$(BIN)/python docs/screenshots.py --store '$(SHOTS_STORE)' --out $(SHOTS_OUT)

clean:  ## remove tuner state, test caches and build files (keeps mlruns/ and data/, caches included)
	rm -rf .tuner .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
