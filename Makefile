# cxr-repro: one entry point for install, test, demo, reproduction and reports.
# Per-method reproduce targets live next to their code in <method>/reproduce.mk.
SHELL := /bin/bash
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# SMOKE=1 without DATA: the twin that make twin writes
DATA ?= $(if $(SMOKE),data/synthetic,data)
SMOKE ?=
RUNS ?= $(if $(SMOKE),runs_smoke,runs)

.PHONY: help install test test-fast demo results bench clean-runs weights
help:
	@echo "make demo            install if needed, generate the synthetic twin, run every method's demo"
	@echo "make test            install if needed, run the whole test suite"
	@echo "make install         create $(VENV) with torch/torchvision and all dependencies (idempotent)"
	@echo "make results         aggregate every finished run under $(RUNS)/ into RESULTS.md (the demo's: RUNS=demo_out)"
	@echo "make bench           run the throughput benchmarks in benchmarks/"
	@echo "make reproduce-<method>-<dataset>   e.g. reproduce-adnet-nih DATA=/path/to/datasets"
	@echo "   ... SMOKE=1       the same pipeline at toy scale on CPU, random init, no weight files (DATA defaults to data/synthetic)"
	@echo "make weights         every weight file each reproduce target needs: what, where, download link, sha256, present?"
	@echo "make twin            write the synthetic twin of every dataset to $(DATA)/synthetic"
	@echo "make smoke-reproduce run every reproduce target with SMOKE=1 on the twin (a few minutes)"
	@echo "make eval-authors-<method> WEIGHTS=FILE DATA=...   the authors' released model (adnet, ham, agcnn, cxrclip) on the published protocol"
	@echo "bash benchmarks/gpu_check.sh OUT_DIR  the prepared GPU check: memory, img/s, time to reproduce (--smoke on CPU)"

# Re-installs only when pyproject.toml changed since the last successful install. PY=/path/to/python on the
# command line names an environment you installed yourself: nothing is installed into it.
ifeq ($(origin PY),command line)
install: ;
else
install: $(STAMP)
endif
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(PY) -m shared.demo --data $(DATA)/synthetic --out demo_out

results: install
	$(PY) -m shared.report --all $(RUNS) --out RESULTS.md
	@if [ ! -d "$(RUNS)" ] && [ -d demo_out ]; then \
	  echo "No $(RUNS)/ yet; the runs of make demo are under demo_out/: make results RUNS=demo_out"; fi

bench: install
	$(PY) -m benchmarks

clean-runs:
	rm -rf $(RUNS)

# The weight files of every reproduce target: one table, shared/weights_manifest.py. Each reproduce target runs
# $(call weights_check,$@) after its data checks: every missing file in one message, exit 2 (SMOKE=1: no check).
# The variables that choose the files travel as VAR='value' (single-quoted for the shell).
WEIGHTS_VARS := ADNET_WEIGHTS ADNET_BACKBONE ADNET_IMAGENET ADNET_ALL_WEIGHTS ADNET_SET HAM_FOLD HAM_SET AGCNN_CONFIG \
  AGCNN_SET CHEXTRIEV_WEIGHTS CHEXTRIEV_SET CXRCLIP_CONFIG CXRCLIP_PROMPTS
shell_quote = '$(subst ','\'',$(1))'
WEIGHTS_ARGS = $(foreach v,$(WEIGHTS_VARS),$(v)=$(call shell_quote,$($(v))))
weights_check = @$(PY) -m shared.weights_manifest check $(1) $(WEIGHTS_ARGS)
weights: install
	@$(PY) -m shared.weights_manifest list $(WEIGHTS_ARGS)

-include $(wildcard */reproduce.mk)
include shared/smoke.mk
