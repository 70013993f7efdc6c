"""Label names of every dataset, harmonised in one place (the torchxrayvision habit).

Each list is in the order the dataset or paper uses; code that needs another order reorders by name.
"""
from __future__ import annotations

# NIH ChestX-ray14: alphabetical (the label order of ADNet, HAM and most reimplementations).
NIH_LABELS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
]
# Wang et al. 2017 order: the column order of the CheXNet split files and of most published NIH tables.
NIH_WANG_ORDER = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
NIH_NO_FINDING = "No Finding"
# NIH's box list spells one finding differently from the label table.
NIH_BOX_SPELLINGS = {"Infiltrate": "Infiltration"}

# CheXpert / MIMIC-CXR CheXpert-labeler columns, in the CSV order of CheXpert.
CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
# The five CheXpert competition tasks (ADNet's CheXpert setting order; CXR-CLIP's CheXpert5x200 classes).
CHEXPERT_COMPETITION = ["Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"]
# MIMIC-CXR-JPG label files: the same 14 names, alphabetical.
MIMIC_LABELS = sorted(CHEXPERT_LABELS)

# Chest ImaGenome: 18 anatomies in CheXtriev's category_id order, and its 9 findings.
IMAGENOME_ANATOMIES = [
    "right lung", "right apical zone", "right upper lung zone", "right mid lung zone", "right lower lung zone",
    "right hilar structures", "right costophrenic angle",
    "left lung", "left apical zone", "left upper lung zone", "left mid lung zone", "left lower lung zone",
    "left hilar structures", "left costophrenic angle",
    "mediastinum", "upper mediastinum", "cardiac silhouette", "trachea",
]
IMAGENOME_FINDINGS = [
    "lung opacity", "pleural effusion", "atelectasis", "enlarged cardiac silhouette",
    "pulmonary edema/hazy opacity", "pneumothorax", "consolidation", "fluid overload/heart failure", "pneumonia",
]


def check_known(names, known, what: str) -> None:
    """Raise a ValueError naming every label in ``names`` that is not in ``known``."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} label(s) {unknown}; known: {list(known)}")
