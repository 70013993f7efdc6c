# CXR-CLIP reproduction targets (included by the top Makefile; DATA, RUNS and PY come from there).
#   make reproduce-cxrclip-mimic                         R50, MIMIC only (M)
#   make reproduce-cxrclip-mimic CXRCLIP_CONFIG=swint_mcc  any config in cxrclip/configs/
CXRCLIP_MIMIC := $(DATA)/mimic-cxr-jpg
CXRCLIP_CONFIG ?= r50_m
CXRCLIP_SET = output_root=$(RUNS) data.sources.0.root=$(CXRCLIP_MIMIC) eval.retrieval_root=$(CXRCLIP_MIMIC) \
  eval.zeroshot_root=$(CXRCLIP_MIMIC) $(if $(findstring mc,$(CXRCLIP_CONFIG)),data.sources.1.root=$(DATA)/chexpert) \
  $(if $(findstring mcc,$(CXRCLIP_CONFIG)),data.sources.2.root=$(DATA)/nih)

.PHONY: reproduce-cxrclip-mimic cxrclip-check-data
# the data check comes before `install`, so a wrong DATA fails at once, with the expected layout
reproduce-cxrclip-mimic: cxrclip-check-data install
	$(PY) -m cxrclip.train -cfg cxrclip/configs/$(CXRCLIP_CONFIG).yaml --set $(CXRCLIP_SET)
	$(PY) -m cxrclip.test --run $$(ls -td $(RUNS)/cxrclip/$(CXRCLIP_CONFIG)/*/ | head -1)

cxrclip-check-data:
	@test -f $(CXRCLIP_MIMIC)/mimic-cxr-2.0.0-split.csv || { echo "reproduce-cxrclip-mimic: MIMIC-CXR-JPG 2.0.0 not found at $(CXRCLIP_MIMIC): expected mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}.csv, files/pXX/pSUBJECT/sSTUDY/*.jpg and the MIMIC-CXR reports files/pXX/pSUBJECT/sSTUDY.txt (set DATA=...)"; exit 2; }
	@$(if $(findstring mc,$(CXRCLIP_CONFIG)),test -n "$$(ls $(DATA)/chexpert/train.csv $(DATA)/chexpert/CheXpert-v1.0*/train.csv 2>/dev/null)" || { echo "reproduce-cxrclip-mimic: $(CXRCLIP_CONFIG) also needs CheXpert v1.0-small at $(DATA)/chexpert (train.csv / valid.csv and images, directly or in CheXpert-v1.0-small/)"; exit 2; },true)
	@$(if $(findstring mcc,$(CXRCLIP_CONFIG)),test -n "$$(ls $(DATA)/nih/Data_Entry_2017*.csv* 2>/dev/null)" || { echo "reproduce-cxrclip-mimic: $(CXRCLIP_CONFIG) also needs ChestX-ray14 at $(DATA)/nih (Data_Entry_2017_v2020.csv or Data_Entry_2017.csv, images/)"; exit 2; },true)
	@$(if $(SMOKE),true,test -d pretrained/Bio_ClinicalBERT || { echo "reproduce-cxrclip-mimic: pretrained/Bio_ClinicalBERT not found: save the model and its tokenizer there (see cxrclip/README.md)"; exit 2; })
