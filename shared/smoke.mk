# SMOKE=1: every reproduce target runs its own pipeline (prepare -> train -> test -> report, the same config and
# run directory) at toy scale on CPU, with random init and no weight files:
#   make reproduce-adnet-nih DATA=data/synthetic SMOKE=1     one target (make twin writes data/synthetic)
#   make smoke-reproduce [DATA=D]                            all of them (without DATA: make twin, then its twin)
# How: each method's `<method>/smoke.yaml` is merged over the target's config by appending `@<method>/smoke.yaml`
# to the target's own --set list (shared.config reads `--set @FILE`), and the targets' weight checks and start
# weights are switched off here, so the method reproduce.mk files need no SMOKE branches. Runs go to runs_smoke/
# (not runs/, so `make results` never mixes them with real runs). Included by the top Makefile after them.
SMOKE ?=
SMOKE_TARGETS := reproduce-adnet-nih reproduce-adnet-mimic reproduce-adnet-chexpert reproduce-adnet-all \
  reproduce-ham-nih reproduce-ham-nih-loc reproduce-ham-nih-official reproduce-ham-chexpert reproduce-agcnn-nih \
  $(addprefix reproduce-chextriev-mimic-,$(CHEXTRIEV_VARIANTS) $(addsuffix -fixed,$(CHEXTRIEV_VARIANTS))) \
  reproduce-cxrclip-mimic

ifneq ($(SMOKE),)
override ADNET_SET += @adnet/smoke.yaml
override HAM_SET += @ham/smoke.yaml
override AGCNN_SET += @agcnn/smoke.yaml
override CHEXTRIEV_SET += @chextriev/smoke.yaml
override CXRCLIP_SET += @cxrclip/smoke.yaml
# random init: no start weights are named or checked (ADNet's ALL fine-tuning still starts from the ALL run)
weights_check =
adnet_init = model.pretrained_path=null model.backbone_weights=null
chextriev_weights =
endif

# Each target in its own make, logged to $(SMOKE_RUNS)/smoke_logs/<target>.log; one line per target, then the
# failures. Runs go to runs_smoke/ (RUNS=... on the command line: there) even though this target is not SMOKE=1.
SMOKE_RUNS := $(if $(filter command line,$(origin RUNS)),$(RUNS),runs_smoke)
SMOKE_DATA := $(if $(filter command line,$(origin DATA)),$(DATA),$(DATA)/synthetic)
.PHONY: smoke-reproduce twin print-smoke-targets
smoke-reproduce: install $(if $(filter command line,$(origin DATA)),,twin)
	@test -d "$(SMOKE_DATA)" || { echo "smoke-reproduce: DATA folder not found: $(SMOKE_DATA) (make twin writes data/synthetic; then DATA=data/synthetic)" >&2; exit 2; }
	@mkdir -p $(SMOKE_RUNS)/smoke_logs; failed=""; \
	for t in $(SMOKE_TARGETS); do start=$$(date +%s); log=$(SMOKE_RUNS)/smoke_logs/$$t.log; \
	  if $(MAKE) --no-print-directory $$t SMOKE=1 DATA=$(SMOKE_DATA) RUNS=$(SMOKE_RUNS) >$$log 2>&1; \
	  then echo "ok     $$t ($$(( $$(date +%s) - start )) s)"; \
	  else echo "FAILED $$t ($$(( $$(date +%s) - start )) s): see $$log"; failed="$$failed $$t"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "smoke-reproduce: failed:$$failed" >&2; exit 1; fi; \
	echo "smoke-reproduce: all $(words $(SMOKE_TARGETS)) targets ran end to end; runs under $(SMOKE_RUNS)/"

# the synthetic twin of every layout under data/synthetic, in the folders a real DATA root has (reused when complete)
twin: install
	$(PY) -m shared.demo --data $(DATA)/synthetic --twins-only

# SMOKE only: HAM's shipped CheXpert boxes name real images, so the twin's own (in HAM's format) stand in, and the
# config's own box splits (which ham/smoke.yaml replaces with NIH-style ones) come back. A real run keeps the
# shipped boxes (without this guard it would look for BBoxes.json inside the user's CheXpert folder).
ifneq ($(SMOKE),)
reproduce-ham-chexpert: override HAM_SET += data.boxes=$(HAM_CHEXPERT)/CheXpert-v1.0-small/BBoxes.json \
  data.box_sizes=$(HAM_CHEXPERT)/CheXpert-v1.0-small/box_sizes.csv 'data.train=split:train - boxes:all' \
  data.train_boxes=null data.test=boxes:all data.test_boxes=boxes:all
endif

print-smoke-targets:
	@echo $(SMOKE_TARGETS)

# a misspelt reproduce target: one line with the ones that exist (explicit targets win over this pattern)
reproduce-%:
	@echo "make: no target $@; reproduce targets: $(SMOKE_TARGETS) reproduce-chextriev-mimic[-fixed] (see make help)" >&2; exit 2
