# AG-CNN reproduction targets (included by the top Makefile; PY, DATA and RUNS come from there).
#   make reproduce-agcnn-nih                   ResNet-50 AG-CNN, CheXNet 70/10/20 split (Table I "AG-CNN R-50", Fig. 9)
#   make reproduce-agcnn-nih AGCNN_CONFIG=nih_densenet121   any config of agcnn/configs (e.g. the D-121 row)
#   AGCNN_SET="model.pretrained_path=/weights/resnet50.pth ..." extra overrides; the run directory is fixed,
#   so re-running the target resumes (finished stages are reused, the interrupted one continues).
AGCNN_NIH := $(DATA)/nih
AGCNN_CONFIG ?= nih_resnet50
AGCNN_SET ?=
AGCNN_RUN := $(RUNS)/agcnn/$(AGCNN_CONFIG)/make
AGCNN_NIH_MSG := NIH ChestX-ray14 not found at $(AGCNN_NIH): expected Data_Entry_2017*.csv and images/*.png (or images_XXX/images/*.png) there (set DATA=...); the CheXNet 70/10/20 split lists are shipped

.PHONY: reproduce-agcnn-nih
reproduce-agcnn-nih: install
	@ls $(AGCNN_NIH)/Data_Entry_2017*.csv* >/dev/null 2>&1 || { echo "reproduce-agcnn-nih: $(AGCNN_NIH_MSG)"; exit 2; }
	$(PY) -m agcnn.train -cfg agcnn/configs/$(AGCNN_CONFIG).yaml --run-dir $(AGCNN_RUN) --set runs=$(RUNS) data.root=$(AGCNN_NIH) $(AGCNN_SET)
	$(PY) -m agcnn.test --run $(AGCNN_RUN)
	$(PY) -m shared.report $(AGCNN_RUN)
