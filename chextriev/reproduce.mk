# CheXtriev reproduction targets (included by the top Makefile; PY, DATA and RUNS come from there).
#   make reproduce-chextriev-mimic-v6 DATA=/datasets CHEXTRIEV_WEIGHTS=/weights    the paper's best model (V6)
#   make reproduce-chextriev-mimic    ...                                           every variant, one after another
#   make reproduce-chextriev-mimic-<config>                                          any config in chextriev/configs/
# Each target: check the data and the ImageNet weights -> prepare (once) -> train -> test (retrieval tables,
# top-k CSV, strips) -> python -m shared.report RUN. CHEXTRIEV_SET="eval.drop_self=id ..." adds overrides;
# CHEXTRIEV_RESUME=1 continues the newest run of the config (a killed training) instead of starting a new one.
# ImageNet weights (torchvision/timm state dicts; download them yourself, nothing is fetched):
#   $(CHEXTRIEV_WEIGHTS)/resnet50_imagenet.pth (every model but ATH and AnaXNet), densenet121_imagenet.pth (AnaXNet)
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
	$(if $(call chextriev_weights,$(1)),@test -f $(call chextriev_weights,$(1)) || { echo "reproduce-chextriev: ImageNet weights not found: $(call chextriev_weights,$(1)) (a torchvision/timm state dict; set CHEXTRIEV_WEIGHTS=...)" >&2; exit 2; })
endef

# $(call chextriev_run,CONFIG): prepare if needed -> train -> test -> report; run dir = newest under RUNS
chextriev_sets = runs_root=$(RUNS) data.prepared=$(CHEXTRIEV_PREPARED) model.pretrained_path=$(or $(call chextriev_weights,$(1)),null) $(CHEXTRIEV_SET)
define chextriev_run
	$(call chextriev_check,$(1))
	@test -f $(CHEXTRIEV_PREPARED)/meta.json || $(PY) -m chextriev.prepare --mimic $(CHEXTRIEV_MIMIC) --imagenome $(CHEXTRIEV_IMAGENOME) --out $(CHEXTRIEV_PREPARED)
	$(PY) -m chextriev.train -cfg chextriev/configs/$(1).yaml --set $(call chextriev_sets,$(1)) $(if $(CHEXTRIEV_RESUME),--resume latest)
	RUN=$$(ls -td $(RUNS)/chextriev/$(1)/*/ | head -1) && \
	$(PY) -m chextriev.test -cfg chextriev/configs/$(1).yaml --run $${RUN} --set $(call chextriev_sets,$(1)) && \
	$(PY) -m shared.report $${RUN}
endef

define chextriev_target
reproduce-chextriev-mimic-$(1): install
	$$(call chextriev_run,$(1))
endef

.PHONY: reproduce-chextriev-mimic $(addprefix reproduce-chextriev-mimic-,$(CHEXTRIEV_VARIANTS))
$(foreach v,$(CHEXTRIEV_VARIANTS),$(eval $(call chextriev_target,$(v))))

reproduce-chextriev-mimic: $(addprefix reproduce-chextriev-mimic-,$(CHEXTRIEV_VARIANTS))
