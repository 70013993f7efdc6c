"""CheXpert v1.0 (and -small) -> one index DataFrame, with the label policies as parameters.

Expected layout (as downloaded; ``root`` may be the dataset folder itself or its parent)::

    root/CheXpert-v1.0-small/train.csv      Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels (1.0 / 0.0 / -1.0 / blank)
    root/CheXpert-v1.0-small/valid.csv      the 234-image radiologist-labelled validation set (no -1, no blanks)
    root/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg ...

The CSV's ``Path`` column starts with the dataset folder name (``CheXpert-v1.0-small/train/...``); the reader
strips that first component and resolves the rest against the folder holding the CSV, so renaming the folder
works. ``image_id`` is that stripped relative path (``train/patient00001/study1/view1_frontal.jpg``, the key
HAM's CheXpert boxes use).

Example (ADNet's CheXpert setting)::

    from shared.data import chexpert
    from shared.data.labels import CHEXPERT_COMPETITION
    train = chexpert.read_index(root, "train", labels=CHEXPERT_COMPETITION, frontal_only=True,
                                uncertain={"Edema": "ones", "Atelectasis": "ones"}, uncertain_default="zeros")
    test = chexpert.read_index(root, "valid", labels=CHEXPERT_COMPETITION, frontal_only=True)

Label policies (applied per label column, result float32):

* ``uncertain`` (the -1.0 values): ``"zeros"`` (U-Zeros), ``"ones"`` (U-Ones), ``"ignore"`` (NaN, to be masked in
  the loss), ``"keep"`` (stays -1.0); or a ``{label: policy}`` dict, the labels it does not name getting
  ``uncertain_default``.
* ``blank`` (no mention): ``"zeros"`` (the usual) or ``"keep"`` (NaN).

Columns: ``path``, ``image_id``, ``patient_id`` (``patient00001``), ``study_id`` (``patient00001/study1``),
``split`` ('train' for train.csv, 'val' for valid.csv), ``sex``, ``age``, ``frontal_lateral``, ``view``
(AP/PA for frontal images, 'Lateral' for lateral ones), then the label columns (CheXpert's names, CSV order
unless ``labels`` picks others). ``frame.attrs``: ``label_columns``, ``excluded_lateral`` (rows removed by
``frontal_only``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ._common import (DataError, apply_missing, apply_policy, check_label_values, check_on_missing, read_csv,
                      label_policies, require_columns, walk_files)
from .labels import CHEXPERT_LABELS

__all__ = ["read_index", "find_csv_dir"]

META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
_SPLIT_FILES = {"train": ("train.csv", "train"), "valid": ("valid.csv", "val"), "val": ("valid.csv", "val")}


def find_csv_dir(root: str | os.PathLike, csv_name: str = "train.csv") -> Path:
    """The folder holding ``csv_name``: ``root`` itself or a ``root/CheXpert-v1.0*`` child."""
    root = Path(root).expanduser().resolve()
    for cand in [root] + sorted(p for p in root.glob("CheXpert-v1.0*") if p.is_dir()):
        if (cand / csv_name).is_file() or (cand / f"{csv_name}.gz").is_file():
            return cand
    raise DataError(f"CheXpert: no {csv_name} in {root} or {root}/CheXpert-v1.0*/")


def _read_one(root: Path, which: str, labels: Sequence[str], policies: Mapping[str, str], blank: str,
              frontal_only: bool) -> pd.DataFrame:
    csv_name, split_name = _SPLIT_FILES[which]
    csv_dir = find_csv_dir(root, csv_name)
    source = csv_dir / csv_name if (csv_dir / csv_name).is_file() else csv_dir / f"{csv_name}.gz"
    raw = read_csv(source, dtype={"Path": str, "Sex": str, "Frontal/Lateral": str, "AP/PA": str})
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, list(META_COLUMNS) + list(labels), source)
    empty = raw["Path"].isna()
    if empty.any():
        raise DataError(f"{source}: line {int(np.flatnonzero(empty.to_numpy())[0]) + 2}, column 'Path' is empty")
    check_label_values(raw, labels, (1.0, 0.0, -1.0), source)

    rel = raw["Path"].str.strip().str.replace("\\", "/", regex=False)
    first = rel.str.split("/", n=1).str[0]
    strip = first.str.startswith("CheXpert-v1.0")
    image_id = rel.where(~strip, rel.str.split("/", n=1).str[1])
    parts = image_id.str.split("/")
    frame = pd.DataFrame({
        "path": (str(csv_dir) + os.sep + image_id.str.replace("/", os.sep, regex=False)).astype(object),
        "image_id": image_id,
        "patient_id": parts.str[1],
        "study_id": parts.str[1] + "/" + parts.str[2],
        "split": split_name,
        "sex": raw["Sex"],
        "age": pd.to_numeric(raw["Age"], errors="coerce").astype("float32"),
        "frontal_lateral": raw["Frontal/Lateral"],
    })
    bad = ~frame["patient_id"].fillna("").str.startswith("patient")
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}: line {pos + 2}, column 'Path': {raw['Path'].iloc[pos]!r} is not "
                        "<split>/patientX/studyY/<view>.jpg")
    lateral = frame["frontal_lateral"].str.lower().eq("lateral").to_numpy()
    frame["view"] = np.where(lateral, "Lateral", raw["AP/PA"].fillna("").to_numpy())
    for lab in labels:
        values = pd.to_numeric(raw[lab], errors="coerce").to_numpy(np.float64)
        frame[lab] = apply_policy(values, policies[lab], blank, lab)
    frame.attrs["source"] = str(source)
    frame.attrs["excluded_lateral"] = 0
    if frontal_only:
        keep = ~lateral
        frame = frame.loc[keep].reset_index(drop=True)
        frame.attrs["excluded_lateral"] = int((~keep).sum())
    frame.attrs["csv_dir"] = str(csv_dir)
    return frame


def read_index(root: str | os.PathLike, split: str = "train", labels: Sequence[str] | None = None,
               uncertain: str | Mapping[str, str] = "zeros", uncertain_default: str = "zeros",
               blank: str = "zeros", frontal_only: bool = False, check_files: bool = True,
               on_missing: str = "error") -> pd.DataFrame:
    """Read CheXpert under ``root`` (see the module docstring).

    ``split``: "train", "valid" (or "val"), or "all" (both files, train first). ``labels``: the label columns
    to produce (default: all 14, CSV order); an unknown name raises.
    """
    check_on_missing(on_missing)
    labels = list(CHEXPERT_LABELS if labels is None else labels)
    policies = label_policies("CheXpert", labels, CHEXPERT_LABELS, uncertain, uncertain_default, blank)
    if split == "all":
        which = ["train", "valid"]
    elif split in _SPLIT_FILES:
        which = [split]
    else:
        raise ValueError(f"split must be 'train', 'valid' or 'all', got {split!r}")
    root = Path(root).expanduser().resolve()
    parts = [_read_one(root, w, labels, policies, blank, frontal_only) for w in which]
    scan_dirs = {Path(p.attrs["csv_dir"]) / sub for p in parts
                 for sub in p["image_id"].str.split("/", n=1).str[0].unique()}
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
    frame.attrs = {"label_columns": labels, "excluded_lateral": sum(p.attrs["excluded_lateral"] for p in parts),
                   "source": [p.attrs["source"] for p in parts]}
    if check_files:
        present_files: set[str] = set()
        for directory in sorted(scan_dirs):
            if directory.is_dir():
                present_files |= walk_files(directory, (".jpg", ".jpeg", ".png"))
        present = frame["path"].isin(present_files).to_numpy()
        frame = apply_missing(frame, present, on_missing, f"CheXpert images under {root}")
    return frame.reset_index(drop=True)
