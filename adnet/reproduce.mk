# ADNet reproduce targets (included by the top Makefile; uses $(PY), $(DATA), $(RUNS)).
#   make reproduce-adnet-nih DATA=/datasets ADNET_WEIGHTS=/weights [ADNET_BACKBONE=resnet50]
# Each target: check the data + starting weights (`make weights` lists them) -> train (adnet.train --no-test)
# -> test (adnet.test on best.pt) -> report (python -m shared.report RUN_DIR). Start weights, as the published
# rows: the authors' released whole-ADNet IN1K checkpoints
# $(ADNET_WEIGHTS)/{convnext_tiny|resnet50}_ADNet_IN1K.pth.tar (download them yourself; nothing is downloaded here).
# Deviation: ADNET_IMAGENET=<local timm ImageNet state dict of the backbone> starts from ImageNet backbone weights
# only (decoder, HMT and head random) instead.
# ADNET_SET="key=value ..." passes overrides (e.g. data.honest_validation=true).
ADNET_WEIGHTS ?= weights
ADNET_BACKBONE ?= convnext
ADNET_SET ?=
ADNET_NIH := $(DATA)/nih
ADNET_MIMIC := $(DATA)/mimic-cxr-jpg
ADNET_CHEXPERT := $(DATA)/chexpert
ADNET_CHEXCLUSION := $(ADNET_MIMIC)/testSet_SubjID.csv
ADNET_IMAGENET ?=
ADNET_START = $(if $(filter resnet50,$(ADNET_BACKBONE)),resnet50,convnext_tiny)_ADNet
# $(call adnet_init,MODEL_PREFIX): the --set words that choose the starting weights
adnet_in1k = $(ADNET_WEIGHTS)/$(1)_IN1K.pth.tar
adnet_init = $(if $(ADNET_IMAGENET),model.pretrained_path=null model.backbone_weights=$(ADNET_IMAGENET),model.pretrained_path=$(call adnet_in1k,$(1)))

ADNET_LAYOUT_nih := $(ADNET_NIH)/ with Data_Entry_2017[_v2020].csv, train_val_list.txt, test_list.txt and images/*.png (or Kaggle images_0XX/images/)
ADNET_LAYOUT_mimic := $(ADNET_MIMIC)/ with mimic-cxr-2.0.0-{negbio,split,metadata}.csv[.gz] and files/pXX/pSUBJECT/sSTUDY/*.jpg, plus CheXclusion's testSet_SubjID.csv at $(ADNET_CHEXCLUSION)
ADNET_LAYOUT_chexpert := $(ADNET_CHEXPERT)/ with CheXpert-v1.0-small/{train,valid}.csv and its train/ valid/ folders

# $(call adnet_need_dir,DIR,LAYOUT)
adnet_need_dir = @test -d "$(1)" || { echo "reproduce-adnet: dataset not found: $(1) is missing. Expected $(2) (set DATA=...)" >&2; exit 2; }
adnet_need_file = @test -f "$(1)" || { echo "reproduce-adnet: $(2) not found: $(1)" >&2; exit 2; }
# NIH is trained and tested from 512x512 copies, as the original (its loader read root/img_512/): made once by
# adnet-prepare-nih512 into ADNET_NIH512 (resumable; a second run does no work). ADNET_NIH_FULLRES=1 reads the
# full-resolution images instead (ours before).
ADNET_NIH512 ?= $(DATA)/nih_512
ADNET_NIH_FULLRES ?=
ADNET_NIH_ROOT = $(if $(ADNET_NIH_FULLRES),$(ADNET_NIH),$(ADNET_NIH512))
adnet_prepare_nih = $(if $(ADNET_NIH_FULLRES),,$(MAKE) --no-print-directory adnet-prepare-nih512)

.PHONY: adnet-prepare-nih512
adnet-prepare-nih512: install
	$(call adnet_need_dir,$(ADNET_NIH),$(ADNET_LAYOUT_nih))
	$(PY) -m shared.data.prepare --dataset nih --root $(ADNET_NIH) --out $(ADNET_NIH512) --size 512 --mode square

ADNET_DATA_SETS = runs_root=$(RUNS) data.nih_root=$(ADNET_NIH_ROOT) data.mimic_root=$(ADNET_MIMIC) \
  data.chexpert_root=$(ADNET_CHEXPERT) data.chexclusion_test_subjects=$(ADNET_CHEXCLUSION)
# $(call adnet_run,CONFIG,EXTRA_SETS): train -> test -> report, run dir = newest under $(RUNS)/adnet/CONFIG
define adnet_run
	$(PY) -m adnet.train -cfg adnet/configs/$(1).yaml --no-test --set $(ADNET_DATA_SETS) $(2) $(ADNET_SET)
	RUN=$$(ls -td $(RUNS)/adnet/$(1)/*/ | head -1) && \
	$(PY) -m adnet.test -cfg $${RUN}config.yaml --weights $${RUN}checkpoints/best.pt --run-dir $${RUN} && \
	$(PY) -m shared.report $${RUN}
endef

.PHONY: reproduce-adnet-nih reproduce-adnet-mimic reproduce-adnet-chexpert reproduce-adnet-all
reproduce-adnet-nih: install
	$(call adnet_need_dir,$(ADNET_NIH),$(ADNET_LAYOUT_nih))
	$(call weights_check,$@)
	$(adnet_prepare_nih)
	$(call adnet_run,nih_$(ADNET_BACKBONE),$(call adnet_init,$(ADNET_START)))

reproduce-adnet-mimic: install
	$(call adnet_need_dir,$(ADNET_MIMIC),$(ADNET_LAYOUT_mimic))
	$(call adnet_need_file,$(ADNET_CHEXCLUSION),CheXclusion test-subject list (testSet_SubjID.csv))
	$(call weights_check,$@)
	$(call adnet_run,mimic_$(ADNET_BACKBONE),$(call adnet_init,$(ADNET_START)))

# The published CheXpert row is ResNet50 only.
reproduce-adnet-chexpert: install
	$(call adnet_need_dir,$(ADNET_CHEXPERT),$(ADNET_LAYOUT_chexpert))
	$(call weights_check,$@)
	$(call adnet_run,chexpert_resnet50,$(call adnet_init,resnet50_ADNet))

# ALL: pretrain on NIH+MIMIC+CheXpert (21 classes) from IN1K, then fine-tune on NIH and MIMIC from OUR ALL
# best.pt, starting from the weights it was selected on (raw or EMA: its best_source, read by
# adnet.checkpoint.choose_ema since model.pretrained_ema is null by default). ADNET_ALL_EMA=true|false forces EMA
# or raw weights. Set ADNET_ALL_WEIGHTS=<released {backbone}_ADNet_ALL.pth.tar> to skip pretraining.
ADNET_ALL_WEIGHTS ?=
ADNET_ALL_EMA ?=
adnet_all_start = model.pretrained_path=$(ADNET_ALL_WEIGHTS) $(if $(ADNET_ALL_EMA),model.pretrained_ema=$(ADNET_ALL_EMA))
reproduce-adnet-all: install
	$(call adnet_need_dir,$(ADNET_NIH),$(ADNET_LAYOUT_nih))
	$(call adnet_need_dir,$(ADNET_MIMIC),$(ADNET_LAYOUT_mimic))
	$(call adnet_need_file,$(ADNET_CHEXCLUSION),CheXclusion test-subject list (testSet_SubjID.csv))
	$(call adnet_need_dir,$(ADNET_CHEXPERT),$(ADNET_LAYOUT_chexpert))
	$(call weights_check,$@)
	$(adnet_prepare_nih)
ifeq ($(ADNET_ALL_WEIGHTS),)
	$(call adnet_run,all_$(ADNET_BACKBONE),$(call adnet_init,$(ADNET_START)))
	ALL=$$(ls -td $(RUNS)/adnet/all_$(ADNET_BACKBONE)/*/ | head -1)checkpoints/best.pt && \
	$(MAKE) --no-print-directory reproduce-adnet-all ADNET_ALL_WEIGHTS=$$ALL
else
	$(call adnet_run,all_nih_$(ADNET_BACKBONE),$(adnet_all_start))
	$(call adnet_run,all_mimic_$(ADNET_BACKBONE),$(adnet_all_start))
endif

# make eval-authors-adnet WEIGHTS=<released {name}.pth.tar> DATA=/datasets: the authors' model on its setting's
# published test protocol (the config whose model.name is the file's name; NIH from the 512-px copies), then
# ours vs published (shared.report) in $(RUNS)/adnet/authors/{name}/.
ADNET_AUTHORS_RUN = $(RUNS)/adnet/authors/$(firstword $(subst ., ,$(notdir $(WEIGHTS))))
.PHONY: eval-authors-adnet
eval-authors-adnet: install
	@test -n "$(WEIGHTS)" || { echo "eval-authors-adnet: set WEIGHTS=<released {name}.pth.tar> (download links in adnet/README.md)" >&2; exit 2; }
	$(call adnet_need_file,$(WEIGHTS),released weights (WEIGHTS))
	$(if $(findstring _NIH,$(notdir $(WEIGHTS))),$(adnet_prepare_nih))
	$(PY) -m adnet.test --weights $(WEIGHTS) --run-dir $(ADNET_AUTHORS_RUN) --set $(ADNET_DATA_SETS) $(ADNET_SET)
	$(PY) -m shared.report $(ADNET_AUTHORS_RUN)
