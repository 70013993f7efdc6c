# CXR-CLIP reproduction targets (included by the top Makefile; DATA, RUNS and PY come from there).
#   make reproduce-cxrclip-mimic                         R50, MIMIC only (M)
#   make reproduce-cxrclip-mimic CXRCLIP_CONFIG=swint_mcc  any config in cxrclip/configs/
CXRCLIP_MIMIC := $(DATA)/mimic-cxr-jpg
CXRCLIP_CONFIG ?= r50_m
CXRCLIP_5X200 := $(DATA)/chexpert/chexpert_5x200.csv
CXRCLIP_PROMPTS := pretrained/train_prompts_all.json
CXRCLIP_SET = output_root=$(RUNS) data.sources.0.root=$(CXRCLIP_MIMIC) eval.retrieval_root=$(CXRCLIP_MIMIC) \
  eval.zeroshot_root=$(CXRCLIP_MIMIC) \
  $(if $(findstring mc,$(CXRCLIP_CONFIG)),data.sources.1.root=$(DATA)/chexpert data.sources.1.holdout_csv=$(CXRCLIP_5X200) \
    data.sources.1.prompt_file=$(CXRCLIP_PROMPTS)) \
  $(if $(findstring mcc,$(CXRCLIP_CONFIG)),data.sources.2.root=$(DATA)/nih data.sources.2.prompt_file=$(CXRCLIP_PROMPTS))

.PHONY: reproduce-cxrclip-mimic cxrclip-check-data
# the data check comes before `install`, so a wrong DATA fails at once, with the expected layout
reproduce-cxrclip-mimic: cxrclip-check-data install
	$(call weights_check,$@)
	$(PY) -m cxrclip.train -cfg cxrclip/configs/$(CXRCLIP_CONFIG).yaml --no-test --set $(CXRCLIP_SET)
	RUN=$$(ls -td $(RUNS)/cxrclip/$(CXRCLIP_CONFIG)/*/ | head -1) && \
	$(PY) -m cxrclip.test --run $${RUN} && \
	$(PY) -m shared.report $${RUN}

cxrclip-check-data:
	@test -f $(CXRCLIP_MIMIC)/mimic-cxr-2.0.0-split.csv || { echo "reproduce-cxrclip-mimic: MIMIC-CXR-JPG 2.0.0 not found at $(CXRCLIP_MIMIC): expected mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}.csv, files/pXX/pSUBJECT/sSTUDY/*.jpg and the MIMIC-CXR reports files/pXX/pSUBJECT/sSTUDY.txt (set DATA=...)"; exit 2; }
	@$(if $(findstring mc,$(CXRCLIP_CONFIG)),test -n "$$(ls $(DATA)/chexpert/train.csv $(DATA)/chexpert/CheXpert-v1.0*/train.csv 2>/dev/null)" || { echo "reproduce-cxrclip-mimic: $(CXRCLIP_CONFIG) also needs CheXpert v1.0 at $(DATA)/chexpert (train.csv / valid.csv and images, directly or in CheXpert-v1.0/; the paper used the full-size release, -small also reads)"; exit 2; },true)
	@$(if $(findstring mc,$(CXRCLIP_CONFIG)),test -f $(CXRCLIP_5X200) || { echo "reproduce-cxrclip-mimic: $(CXRCLIP_CONFIG) leaves the CheXpert5x200 test patients out of training: put GLoRIA's chexpert_5x200.csv at $(CXRCLIP_5X200) (see cxrclip/README.md)"; exit 2; },true)
	@$(if $(findstring mcc,$(CXRCLIP_CONFIG)),test -n "$$(ls $(DATA)/nih/Data_Entry_2017*.csv* 2>/dev/null)" || { echo "reproduce-cxrclip-mimic: $(CXRCLIP_CONFIG) also needs ChestX-ray14 at $(DATA)/nih (Data_Entry_2017_v2020.csv or Data_Entry_2017.csv, images/)"; exit 2; },true)

# ------------------------------------------------------------------------------------------------------------
# The authors' released checkpoint on the published test protocol, compared with the published table:
#   make eval-authors-cxrclip WEIGHTS=r50_mcc.tar DATA=/datasets [CXRCLIP_EVAL_SETS="chexpert5x200 rsna"]
# The config is the file name (r50_mcc.tar -> cxrclip/configs/r50_mcc.yaml; CXRCLIP_CONFIG=... to override).
# Each set is one `cxrclip.test` run, runs/cxrclip/<config>-<set>-eval/<timestamp>/ (published key <config>-<set>),
# reading what `python -m cxrclip.prepare <set> --root RAW --out $(CXRCLIP_EVAL)/<set>` wrote (MIMIC: the JPG root).
CXRCLIP_EVAL ?= $(DATA)/cxrclip_eval
CXRCLIP_EVAL_SETS ?= chexpert5x200 mimic openi rsna siim vindr
CXRCLIP_AUTHORS_CONFIG = $(if $(filter command line,$(origin CXRCLIP_CONFIG)),$(CXRCLIP_CONFIG),$(basename $(notdir $(WEIGHTS))))
CXRCLIP_EVAL_FILE_chexpert5x200 = $(CXRCLIP_EVAL)/chexpert5x200/chexpert_5x200.csv
CXRCLIP_EVAL_FILE_mimic = $(CXRCLIP_MIMIC)/mimic-cxr-2.0.0-split.csv
CXRCLIP_EVAL_FILE_openi = $(CXRCLIP_EVAL)/openi/openi_test.csv
CXRCLIP_EVAL_FILE_rsna = $(CXRCLIP_EVAL)/rsna/test.csv
CXRCLIP_EVAL_FILE_siim = $(CXRCLIP_EVAL)/siim/test.csv
CXRCLIP_EVAL_FILE_vindr = $(CXRCLIP_EVAL)/vindr/test.csv
# what each set evaluates (the rest of eval: switched off); quoted for the shell
CXRCLIP_EVAL_SET_chexpert5x200 = 'eval.chexpert5x200_csv=$(CXRCLIP_EVAL_FILE_chexpert5x200)'
CXRCLIP_EVAL_SET_mimic = 'eval.retrieval_root=$(CXRCLIP_MIMIC)'
CXRCLIP_EVAL_SET_openi = eval.retrieval_layout=csv 'eval.retrieval_root=$(CXRCLIP_EVAL_FILE_openi)'
CXRCLIP_EVAL_SET_rsna = 'eval.zeroshot_csv=$(CXRCLIP_EVAL_FILE_rsna)' 'eval.zeroshot_classes=[Pneumonia]' \
  'eval.binary_prompts={Pneumonia: [No evidence of pneumonia, Findings suggesting pneumonia.]}'
CXRCLIP_EVAL_SET_siim = 'eval.zeroshot_csv=$(CXRCLIP_EVAL_FILE_siim)' 'eval.zeroshot_classes=[Pneumothorax]'
CXRCLIP_EVAL_SET_vindr = 'eval.zeroshot_csv=$(CXRCLIP_EVAL_FILE_vindr)' 'eval.zeroshot_classes=[]'

.PHONY: eval-authors-cxrclip cxrclip-check-authors
eval-authors-cxrclip: cxrclip-check-authors install
	$(foreach set,$(CXRCLIP_EVAL_SETS),$(PY) -m cxrclip.test -cfg cxrclip/configs/$(CXRCLIP_AUTHORS_CONFIG).yaml \
	  --weights '$(WEIGHTS)' --trust-checkpoint --set 'output_root=$(RUNS)' name=$(CXRCLIP_AUTHORS_CONFIG)-$(set) \
	  eval.retrieval_root=null eval.zeroshot_root=null $(CXRCLIP_EVAL_SET_$(set)) &&) true

# every missing input is named at once, with the command that makes it, before anything runs
cxrclip-check-authors:
	@test -n "$(WEIGHTS)" -a -f "$(WEIGHTS)" || { echo "eval-authors-cxrclip: WEIGHTS=FILE must name a released checkpoint (r50_m.tar ... swint_mcc.tar; download links in cxrclip/README.md), got '$(WEIGHTS)'"; exit 2; }
	@test -f cxrclip/configs/$(CXRCLIP_AUTHORS_CONFIG).yaml || { echo "eval-authors-cxrclip: no config cxrclip/configs/$(CXRCLIP_AUTHORS_CONFIG).yaml for $(WEIGHTS): name the file as released (r50_mcc.tar, ...) or set CXRCLIP_CONFIG=r50_mcc"; exit 2; }
	@test -d pretrained/Bio_ClinicalBERT || { echo "eval-authors-cxrclip: pretrained/Bio_ClinicalBERT not found: its config.json and vocab.txt define the text encoder and tokenizer (see cxrclip/README.md)"; exit 2; }
	@missing=0; $(foreach set,$(CXRCLIP_EVAL_SETS),test -f '$(CXRCLIP_EVAL_FILE_$(set))' || { missing=1; echo "eval-authors-cxrclip: $(set): $(CXRCLIP_EVAL_FILE_$(set)) not found: $(if $(filter mimic,$(set)),MIMIC-CXR-JPG 2.0.0 at $(CXRCLIP_MIMIC),run python -m cxrclip.prepare $(set) --root <the $(set) download> --out $(CXRCLIP_EVAL)/$(set)) (or leave $(set) out of CXRCLIP_EVAL_SETS)"; };) exit $$missing
