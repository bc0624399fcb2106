# gdr — `make all` runs the whole pipeline on MovieLens 100K; `make test` runs the tests.
# Each stage is one target that depends on the manifests of its inputs, so a rerun only
# redoes what changed. Override any variable: `make all DATASET=ml CONFIG=tiny DATA=/tmp/d`.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GDR := $(BIN)/gdr
DATA ?= data
SOURCE ?= movielens-100k
DATASET ?= $(SOURCE)
CONFIG ?= default
IDS ?= rqkmeans
CONFIG_FILE := $(wildcard configs/$(CONFIG).yaml)
ARGS := --data-dir $(DATA) --config $(CONFIG)

# torch: the CUDA build where an NVIDIA GPU answers, the CPU build (2.13.0) elsewhere.
# A CPU-only machine elsewhere can point TORCH_INDEX at a CPU wheel index.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH ?= $(if $(HAS_GPU),torch>=2.2,torch==2.13.0)
TORCH_INDEX ?=
INSTALLED := $(VENV)/.installed

D := $(DATA)/$(DATASET)
PROCESSED := $(D)/processed/manifest.json
IDSET := $(D)/ids/$(IDS)/manifest.json
RUNS := pop sasrec tiger diffusion
run_manifest = $(D)/runs/$(1)/manifest.json
recs_manifest = $(D)/recs/$(1)/test/manifest.json

.PHONY: all install test bench bench-quality readme-table lint preprocess build-ids train-rec diffuse sample evaluate clean
.DELETE_ON_ERROR:

all: evaluate

install: $(INSTALLED)
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

preprocess: $(PROCESSED)
$(PROCESSED): $(INSTALLED) $(CONFIG_FILE)
	$(GDR) preprocess $(SOURCE) --name $(DATASET) $(ARGS)

build-ids: $(IDSET)
$(IDSET): $(PROCESSED)
	$(GDR) build-ids $(DATASET) --method $(IDS) --ids $(IDS) $(ARGS)

train-rec: $(call run_manifest,pop) $(call run_manifest,sasrec) $(call run_manifest,tiger)
$(call run_manifest,pop): $(PROCESSED)
	$(GDR) train-rec $(DATASET) --model pop --run pop $(ARGS)
$(call run_manifest,sasrec): $(PROCESSED)
	$(GDR) train-rec $(DATASET) --model sasrec --run sasrec $(ARGS)
$(call run_manifest,tiger): $(IDSET)
	$(GDR) train-rec $(DATASET) --model tiger --ids $(IDS) --run tiger $(ARGS)

diffuse: $(call run_manifest,diffusion)
$(call run_manifest,diffusion): $(IDSET)
	$(GDR) diffuse $(DATASET) --ids $(IDS) --run diffusion $(ARGS)

sample: $(foreach r,$(RUNS),$(call recs_manifest,$(r)))
$(D)/recs/%/test/manifest.json: $(D)/runs/%/manifest.json
	$(GDR) sample $(DATASET) --run $* --split test $(ARGS)

evaluate: sample
	$(GDR) evaluate $(DATASET) --split test --report $(foreach r,$(RUNS),--run $(r)) $(ARGS)

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

# Speed benchmarks; the scale benchmark runs its quick size (2k vs 20k items) unless FULL=1 (10k vs 1M, ~20 minutes on one core).
bench: $(INSTALLED)
	$(BIN)/python benchmarks/run_all.py $(if $(FULL),--full)

# Every model on MovieLens 100K and Last.fm 2K with configs/full.yaml (hours on a 2-core CPU).
bench-quality: $(INSTALLED)
	$(BIN)/python benchmarks/bench_quality.py --config full

# Copy the table of the last `make all` into README.md (between the make-all markers).
readme-table: evaluate
	$(BIN)/python benchmarks/readme_table.py $(D)

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf $(D)
