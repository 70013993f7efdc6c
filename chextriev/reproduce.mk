# CheXtriev reproduction targets (included by the top Makefile; PY, DATA and RUNS come from there).
#   make reproduce-chextriev-mimic-v6 DATA=/datasets CHEXTRIEV_WEIGHTS=/weights    the paper's best model (V6)
#   make reproduce-chextriev-mimic-v6-fixed ...                                     the same with our fixes
#   make reproduce-chextriev-mimic[-fixed] ...                                      every variant, one after another
#   make reproduce-chextriev-mimic-<config>[-fixed]                                  any config in chextriev/configs/
# Each target: check the data and the ImageNet weights (`make weights` lists them) -> prepare (once per label
# policy, into $(CHEXTRIEV_PREPARED)/last_wins or /yes_wins) -> train -> test (retrieval tables, top-k CSV, strips) ->
# python -m shared.report RUN (runs under runs/chextriev/<config>/ and <config>-fixed/).
# CHEXTRIEV_SET="eval.drop_self=id ..." adds overrides (to train and test); CHEXTRIEV_RESUME=1 continues the newest
# run of the config and protocol (a killed training) instead of starting a new one.
# ImageNet weights (torchvision/timm state dicts; download them yourself, nothing is fetched):
#   $(CHEXTRIEV_WEIGHTS)/resnet50_imagenet.pth (every model but ATH and AnaXNet): torchvision's DEFAULT =
#   IMAGENET1K_V2 (resnet50-11ad3fa6.pth, or timm resnet50.tv2_in1k), what the original used; the V1 file is refused
#   $(CHEXTRIEV_WEIGHTS)/densenet121_imagenet.pth (AnaXNet): DEFAULT = IMAGENET1K_V1 (timm densenet121.tv_in1k)
CHEXTRIEV_MIMIC := $(DATA)/mimic-cxr-jpg
CHEXTRIEV_IMAGENOME := $(DATA)/chest-imagenome
CHEXTRIEV_PREPARED ?= $(DATA)/chextriev_prepared
CHEXTRIEV_WEIGHTS ?= weights
CHEXTRIEV_SET ?=
CHEXTRIEV_RESUME ?=
CHEXTRIEV_VARIANTS := resnet50 ath anaxnet v0_global v0_node v1 v2 v3 v4 v5 v6 v6_learnable_edges
CHEXTRIEV_LAYOUT := MIMIC-CXR-JPG 2.0.0 at $(CHEXTRIEV_MIMIC)/ (mimic-cxr-2.0.0-split.csv, mimic-cxr-2.0.0-metadata.csv and files/pXX/pSUBJECT/sSTUDY/DICOM.jpg) and Chest ImaGenome 1.0.0 at $(CHEXTRIEV_IMAGENOME)/ (silver_dataset/scene_graph/DICOM_SceneGraph.json as PhysioNet ships it, or silver/scene_graph/DICOM_SceneGraph.json); set DATA=...
# the frozen CNN's ImageNet weights per config (none for ATH, trained from scratch)
chextriev_weights = $(if $(filter ath,$(1)),,$(CHEXTRIEV_WEIGHTS)/$(if $(filter anaxnet,$(1)),densenet121,resnet50)_imagenet.pth)

define chextriev_check
	@test -f $(CHEXTRIEV_MIMIC)/mimic-cxr-2.0.0-split.csv -o -f $(CHEXTRIEV_MIMIC)/mimic-cxr-2.0.0-split.csv.gz || { echo "reproduce-chextriev: MIMIC-CXR-JPG not found. Expected $(CHEXTRIEV_LAYOUT)" >&2; exit 2; }
	@test -d $(CHEXTRIEV_IMAGENOME)/silver_dataset/scene_graph -o -d $(CHEXTRIEV_IMAGENOME)/silver/scene_graph || { echo "reproduce-chextriev: Chest ImaGenome not found. Expected $(CHEXTRIEV_LAYOUT)" >&2; exit 2; }
	$(call weights_check,$@)
endef

# Two runs per published row (spec section 7), one target each; they differ in exactly BN mode and label policy
# (and so in the prepared data and the run name); chextriev.config.PROTOCOLS holds the same two (tested):
#   faithful  reproduce-chextriev-mimic-<config>        model.bn_drift=true  data.label_policy=last_wins (published)
#   fixed     reproduce-chextriev-mimic-<config>-fixed  model.bn_drift=false data.label_policy=yes_wins  (ours)
chextriev_policy = $(if $(filter faithful,$(1)),last_wins,yes_wins)
chextriev_bn_drift = $(if $(filter faithful,$(1)),true,false)
chextriev_name = $(1)$(if $(filter fixed,$(2)),-fixed)
chextriev_prepared = $(CHEXTRIEV_PREPARED)/$(call chextriev_policy,$(1))
chextriev_sets = name=$(call chextriev_name,$(1),$(2)) runs_root=$(RUNS) data.prepared=$(call chextriev_prepared,$(2)) data.label_policy=$(call chextriev_policy,$(2)) model.bn_drift=$(call chextriev_bn_drift,$(2)) model.pretrained_path=$(or $(call chextriev_weights,$(1)),null) $(CHEXTRIEV_SET)

# $(call chextriev_run,CONFIG,PROTOCOL): prepare (once per label policy) -> train -> test -> report
define chextriev_run
	$(call chextriev_check,$(1))
	@test -f $(call chextriev_prepared,$(2))/meta.json || $(PY) -m chextriev.prepare --mimic $(CHEXTRIEV_MIMIC) --imagenome $(CHEXTRIEV_IMAGENOME) --label-policy $(call chextriev_policy,$(2)) --out $(call chextriev_prepared,$(2))
	$(PY) -m chextriev.train -cfg chextriev/configs/$(1).yaml --no-test --set $(call chextriev_sets,$(1),$(2)) $(if $(CHEXTRIEV_RESUME),--resume latest)
	RUN=$$(ls -td $(RUNS)/chextriev/$(call chextriev_name,$(1),$(2))/*/ | head -1) && \
	$(PY) -m chextriev.test --run $${RUN} $(if $(CHEXTRIEV_SET),--set $(CHEXTRIEV_SET)) && \
	$(PY) -m shared.report $${RUN}
endef

define chextriev_target
reproduce-chextriev-mimic-$(1): install
	$$(call chextriev_run,$(1),faithful)
reproduce-chextriev-mimic-$(1)-fixed: install
	$$(call chextriev_run,$(1),fixed)
endef

.PHONY: reproduce-chextriev-mimic reproduce-chextriev-mimic-fixed
.PHONY: $(addprefix reproduce-chextriev-mimic-,$(CHEXTRIEV_VARIANTS) $(addsuffix -fixed,$(CHEXTRIEV_VARIANTS)))
$(foreach v,$(CHEXTRIEV_VARIANTS),$(eval $(call chextriev_target,$(v))))

# the weights of every variant in one message before the first starts (the variants share them across protocols)
.PHONY: chextriev-check-weights
chextriev-check-weights: install
	$(call weights_check,$(addprefix reproduce-chextriev-mimic-,$(CHEXTRIEV_VARIANTS)))
reproduce-chextriev-mimic: chextriev-check-weights $(addprefix reproduce-chextriev-mimic-,$(CHEXTRIEV_VARIANTS))
reproduce-chextriev-mimic-fixed: chextriev-check-weights $(addprefix reproduce-chextriev-mimic-,$(addsuffix -fixed,$(CHEXTRIEV_VARIANTS)))
