# HAM reproduction targets (included by the top Makefile; PY, DATA and RUNS come from there).
#   make reproduce-ham-nih                    classification 5-fold, fold 1 (HAM_FOLD=2..5 for the others)
#   make reproduce-ham-nih-loc                localisation 5-fold, fold 1 (HAM_FOLD=...)
#   make reproduce-ham-chexpert               CheXpert box localisation
#   HAM_SET="data.honest_validation=true ..." extra overrides; the run directory is fixed, so a re-run resumes.
HAM_NIH := $(DATA)/nih
HAM_CHEXPERT := $(DATA)/chexpert
HAM_FOLD ?= 1
HAM_SET ?=
HAM_NIH_MSG := NIH ChestX-ray14 not found at $(HAM_NIH): expected Data_Entry_2017*.csv, BBox_List_2017.csv and images/*.png (or images_XXX/images/*.png) there (set DATA=...); HAM's split files are shipped
HAM_CHEXPERT_MSG := CheXpert not found at $(HAM_CHEXPERT): expected CheXpert-v1.0*/train.csv and the images it names (set DATA=...); HAM's CheXpert boxes are shipped

define ham_run
	$(PY) -m ham.train -cfg ham/configs/$(1).yaml --no-test --run-dir $(RUNS)/ham/$(1)/make --set runs_root=$(RUNS) data.root=$(2) $(HAM_SET)
	$(PY) -m ham.test --run $(RUNS)/ham/$(1)/make
	$(PY) -m ham.visual --run $(RUNS)/ham/$(1)/make
	$(PY) -m shared.report $(RUNS)/ham/$(1)/make
endef

.PHONY: reproduce-ham-nih reproduce-ham-nih-loc reproduce-ham-nih-official reproduce-ham-chexpert
reproduce-ham-nih: install
	@ls $(HAM_NIH)/Data_Entry_2017*.csv* >/dev/null 2>&1 || { echo "reproduce-ham-nih: $(HAM_NIH_MSG)"; exit 2; }
	$(call weights_check,$@)
	$(call ham_run,nih_cls_fold$(HAM_FOLD),$(HAM_NIH))

reproduce-ham-nih-loc: install
	@ls $(HAM_NIH)/Data_Entry_2017*.csv* >/dev/null 2>&1 || { echo "reproduce-ham-nih-loc: $(HAM_NIH_MSG)"; exit 2; }
	$(call weights_check,$@)
	$(call ham_run,nih_loc_fold$(HAM_FOLD),$(HAM_NIH))

reproduce-ham-nih-official: install
	@ls $(HAM_NIH)/Data_Entry_2017*.csv* >/dev/null 2>&1 || { echo "reproduce-ham-nih-official: $(HAM_NIH_MSG)"; exit 2; }
	$(call weights_check,$@)
	$(call ham_run,nih_official_split,$(HAM_NIH))

reproduce-ham-chexpert: install
	@ls -d $(HAM_CHEXPERT)/CheXpert-v1.0* >/dev/null 2>&1 || ls $(HAM_CHEXPERT)/train.csv >/dev/null 2>&1 || { echo "reproduce-ham-chexpert: $(HAM_CHEXPERT_MSG)"; exit 2; }
	$(call weights_check,$@)
	$(call ham_run,chexpert,$(HAM_CHEXPERT))

# make eval-authors-ham WEIGHTS=<the authors' released .pth> DATA=/data [HAM_AUTHORS_CONFIG=nih_cls_fold1]: the
# released model (official split by default; nih_cls_fold1 / nih_loc_fold1 for the fold-1 ones) on that setting's
# published test protocol, then ours vs published (shared.report) in $(RUNS)/ham/authors/<config>/.
HAM_AUTHORS_CONFIG ?= nih_official_split
HAM_AUTHORS_RUN = $(RUNS)/ham/authors/$(HAM_AUTHORS_CONFIG)
.PHONY: eval-authors-ham
eval-authors-ham: install
	@test -n "$(WEIGHTS)" || { echo "eval-authors-ham: set WEIGHTS=<the authors' released .pth> (links in ham/README.md)" >&2; exit 2; }
	@test -f "$(WEIGHTS)" || { echo "eval-authors-ham: WEIGHTS not found: $(WEIGHTS)" >&2; exit 2; }
	@ls $(HAM_NIH)/Data_Entry_2017*.csv* >/dev/null 2>&1 || { echo "eval-authors-ham: $(HAM_NIH_MSG)"; exit 2; }
	$(PY) -m ham.test -cfg ham/configs/$(HAM_AUTHORS_CONFIG).yaml -w $(WEIGHTS) --out $(HAM_AUTHORS_RUN) --set data.root=$(HAM_NIH) $(HAM_SET)
	$(PY) -m shared.report $(HAM_AUTHORS_RUN)
