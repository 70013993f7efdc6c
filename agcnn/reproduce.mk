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
	$(call weights_check,$@)
	$(PY) -m agcnn.train -cfg agcnn/configs/$(AGCNN_CONFIG).yaml --no-test --run-dir $(AGCNN_RUN) --set runs=$(RUNS) data.root=$(AGCNN_NIH) $(AGCNN_SET)
	$(PY) -m agcnn.test --run $(AGCNN_RUN)
	$(PY) -m shared.report $(AGCNN_RUN)

# make eval-authors-agcnn WEIGHTS=<the seed repository's fusion-FC file> DATA=/data [AGCNN_BRANCHES=RUN_DIR]: the
# only released weights are the fusion FC of a DenseNet-121 AG-CNN with C = 14, so it is evaluated over the two
# branches of a run of ours with that architecture (default: the one `make reproduce-agcnn-nih
# AGCNN_CONFIG=repo_densenet121_joint` writes), then ours vs published in $(RUNS)/agcnn/authors/fusion_fc/.
AGCNN_BRANCHES ?= $(RUNS)/agcnn/repo_densenet121_joint/make
AGCNN_AUTHORS_RUN = $(RUNS)/agcnn/authors/fusion_fc
.PHONY: eval-authors-agcnn
eval-authors-agcnn: install
	@test -n "$(WEIGHTS)" || { echo "eval-authors-agcnn: set WEIGHTS=<the seed repository's fusion-FC file> (see agcnn/README.md)" >&2; exit 2; }
	@test -f "$(WEIGHTS)" || { echo "eval-authors-agcnn: WEIGHTS not found: $(WEIGHTS)" >&2; exit 2; }
	@test -f "$(AGCNN_BRANCHES)/config.yaml" || { echo "eval-authors-agcnn: no AG-CNN run at $(AGCNN_BRANCHES) (set AGCNN_BRANCHES=RUN_DIR of a DenseNet-121 C=14 run, e.g. make reproduce-agcnn-nih AGCNN_CONFIG=repo_densenet121_joint)" >&2; exit 2; }
	@ls $(AGCNN_NIH)/Data_Entry_2017*.csv* >/dev/null 2>&1 || { echo "eval-authors-agcnn: $(AGCNN_NIH_MSG)"; exit 2; }
	$(PY) -m agcnn.test --run $(AGCNN_BRANCHES) --out $(AGCNN_AUTHORS_RUN) --set model.seed_fusion_fc=$(WEIGHTS) data.root=$(AGCNN_NIH) $(AGCNN_SET)
	$(PY) -m shared.report $(AGCNN_AUTHORS_RUN)
