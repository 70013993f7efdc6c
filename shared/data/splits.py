"""Splits: the published split files (shipped in ``shared/data/files``) and seeded patient-disjoint splitting.

=============================================  ================================================================
function                                       returns
=============================================  ================================================================
``nih_official(root=None)``                    ``{"train": [...86,524 ids], "test": [...25,596 ids]}`` from
                                               ``root/{train_val_list,test_list}.txt`` or the shipped copies
``patient_holdout(frame, fraction, seed)``     a copy of ``frame`` whose rows of a seeded ``fraction`` of the
                                               patients of split ``"train"`` are relabelled ``"val"``
``patient_kfold(frame, k, seed)``              a fold number 0..k-1 per row (pandas Series), patient-disjoint
``ham_imagesets(fold=None, root=None)``        HAM's ImageSets: ``{"Main/fold1/train_0.7_0.7": [...], ...}``;
                                               with ``fold=1`` the fold's files without the ``foldN/`` part
``ham_boxes("nih"|"chexpert", path=None)``     DataFrame[image_id, label, x, y, w, h] (x, y, w, h in pixels)
``chexnet_lists(root=None)``                   DataFrame[image_id, split, 14 labels in NIH_WANG_ORDER]
``mimic_official(root)``                       DataFrame[dicom_id, study_id, subject_id, split]
``chexclusion_test_subjects(path)``            sorted list of MIMIC subject ids (str) of CheXclusion's test set
=============================================  ================================================================

Split names are normalised to ``"train"``, ``"val"``, ``"test"`` (MIMIC's "validate" becomes "val").
Patient and subject ids are strings everywhere (``"10000032"``), so they join across tables.

HAM box labels keep HAM's underscore spelling (``Pleural_Effusion``, ``Enlarged_Cardiomediastinum``) for
CheXpert — the class names of HAM's CheXpert setting — while NIH box labels use ``labels.NIH_LABELS``.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ._common import DataError, find_file, read_csv, read_text_lines, require_columns
from .labels import NIH_BOX_SPELLINGS, NIH_LABELS, NIH_WANG_ORDER

__all__ = ["FILES", "nih_official", "patient_holdout", "patient_kfold", "ham_imagesets", "ham_boxes",
           "chexnet_lists", "mimic_official", "chexclusion_test_subjects", "HAM_CHEXPERT_CLASSES",
           "HAM_CHEXPERT_SPELLINGS", "normalise_split_name", "assign_split"]

FILES = Path(__file__).resolve().parent / "files"

# HAM's CheXpert box classes (underscored, as HAM writes them) and the misspelled keys that occur in its file.
HAM_CHEXPERT_CLASSES = ["Cardiomegaly", "Pleural_Effusion", "Edema", "Enlarged_Cardiomediastinum", "Atelectasis",
                        "Pneumonia", "Fracture", "Consolidation", "Pneumothorax"]
HAM_CHEXPERT_SPELLINGS = {"edema": "Edema", "Enlarg_Cardiomediastinum": "Enlarged_Cardiomediastinum"}
_SPLIT_NAMES = {"train": "train", "validate": "val", "valid": "val", "validation": "val", "val": "val",
                "test": "test"}


def normalise_split_name(name: str) -> str:
    """'validate' / 'valid' / 'validation' -> 'val'; 'train', 'test' unchanged; anything else raises."""
    key = str(name).strip().lower()
    if key not in _SPLIT_NAMES:
        raise DataError(f"unknown split name {name!r}; expected one of {sorted(_SPLIT_NAMES)}")
    return _SPLIT_NAMES[key]


# ----------------------------------------------------------------------------------------------- NIH official
def nih_official(root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """The official NIH split: ``{"train": train_val_list, "test": test_list}`` (file names, file order).

    ``root`` holds ``train_val_list.txt`` and ``test_list.txt`` (.gz accepted); ``None`` reads the shipped copies.
    """
    base = Path(root).expanduser() if root is not None else FILES / "nih"
    train = read_text_lines(find_file(base, ("train_val_list.txt",), "NIH official split"))
    test = read_text_lines(find_file(base, ("test_list.txt",), "NIH official split"))
    both = set(train) & set(test)
    if both:
        raise DataError(f"{base}: {len(both)} images in both train_val_list and test_list, e.g. {sorted(both)[:3]}")
    return {"train": train, "test": test}


# ----------------------------------------------------------------------------------------- patient-disjoint
def _patients(frame: pd.DataFrame, patient_column: str) -> pd.Series:
    require_columns(frame, (patient_column,), "index frame")
    pid = frame[patient_column]
    if pid.isna().any():
        pos = int(np.flatnonzero(pid.isna().to_numpy())[0])
        raise DataError(f"index frame: row {pos} has no {patient_column}")
    return pid.astype(str)


def patient_holdout(frame: pd.DataFrame, fraction: float, seed: int, from_split: str = "train",
                    to_split: str = "val", patient_column: str = "patient_id") -> pd.DataFrame:
    """Carve a patient-disjoint validation set out of ``from_split``.

    A seeded random ``round(fraction * n_patients)`` of the patients that have rows in ``from_split`` get all of
    those rows relabelled ``to_split``. Returns a copy; the same (frame, fraction, seed) always gives the same
    split (patients are sorted before the seeded permutation, so row order does not matter).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    require_columns(frame, ("split",), "index frame")
    pid = _patients(frame, patient_column)
    rows = (frame["split"] == from_split).to_numpy()
    if not rows.any():
        raise DataError(f"no rows with split {from_split!r} to carve a validation set from")
    patients = np.array(sorted(pid[rows].unique()))
    n_val = int(round(fraction * len(patients)))
    if n_val < 1 or n_val >= len(patients):
        raise DataError(f"fraction {fraction} of {len(patients)} patients leaves an empty train or val set")
    rng = np.random.default_rng(seed)
    chosen = set(patients[rng.permutation(len(patients))[:n_val]])
    out = frame.copy()
    out.loc[rows & pid.isin(chosen).to_numpy(), "split"] = to_split
    return out


def patient_kfold(frame: pd.DataFrame, k: int, seed: int, patient_column: str = "patient_id") -> pd.Series:
    """A patient-disjoint fold number (0..k-1) for every row, as a Series aligned with ``frame.index``.

    Patients are shuffled with ``seed`` and then assigned, largest first, to the fold with the fewest images
    so far (ties -> lowest fold), so the folds are balanced in images, not only in patients.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    pid = _patients(frame, patient_column)
    counts = pid.value_counts()
    if len(counts) < k:
        raise DataError(f"{len(counts)} patients cannot fill {k} folds")
    patients = np.array(sorted(counts.index))
    rng = np.random.default_rng(seed)
    patients = patients[rng.permutation(len(patients))]
    sizes = counts.loc[patients].to_numpy()
    order = np.argsort(-sizes, kind="stable")
    load = np.zeros(k, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for i in order:
        f = int(np.argmin(load))
        fold_of[patients[i]] = f
        load[f] += sizes[i]
    return pid.map(fold_of).astype(np.int64).rename("fold")


# ------------------------------------------------------------------------------------------------------ HAM
@functools.lru_cache(maxsize=4)
def _imagesets_cached(source: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    path = Path(source)
    if path.is_dir():
        base = path / "ImageSets" if (path / "ImageSets").is_dir() else path
        for f in sorted(base.rglob("*.txt")):
            key = f.relative_to(base).with_suffix("").as_posix()
            out[key] = tuple(read_text_lines(f))
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                if not (member.isfile() and member.name.endswith(".txt")):
                    continue
                parts = Path(member.name).with_suffix("").parts
                if parts and parts[0] == "ImageSets":
                    parts = parts[1:]
                data = tar.extractfile(member).read().decode("utf-8")
                out["/".join(parts)] = tuple(line.strip() for line in data.splitlines() if line.strip())
    if not out:
        raise DataError(f"no ImageSets *.txt split files in {source}")
    return out


def ham_imagesets(fold: int | None = None, root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """HAM's split files as ``{name: [file names]}``.

    ``root``: a directory holding ``ImageSets/`` (HAM's layout) or a tar archive of it; ``None`` reads the
    shipped ``files/ham/ImageSets.tar.gz``. Names are the paths below ``ImageSets/`` without ``.txt``:
    ``Main/train_val_list``, ``Main/test_list``, ``Main/train_wo_bbox``, ``Main/test_bboxs``,
    ``Main/fold{1..5}/{train_0.7_0.7, val_0.1_0.1, test_0.2_0.2, train_0.5_0.8, test_0_0.2}``, ``bbox/test_bboxs``,
    ``bbox/empty``, ``bbox/fold{1..5}/{train_0.7, train_0.8, val_0.1, test}``.
    With ``fold=N`` only the files outside any fold plus fold N's, the latter named without ``foldN/``
    (``Main/train_0.7_0.7``, ``bbox/test``). Parsed once per process (cached); each call returns fresh lists.
    """
    source = Path(root).expanduser().resolve() if root is not None else FILES / "ham" / "ImageSets.tar.gz"
    if not source.exists():
        raise DataError(f"HAM ImageSets not found: {source}")
    sets = _imagesets_cached(str(source))
    if fold is None:
        return {k: list(v) for k, v in sets.items()}
    folds = sorted({p for k in sets for p in k.split("/") if p.startswith("fold")})
    if f"fold{fold}" not in folds:
        raise DataError(f"HAM ImageSets has no fold {fold}; folds: {folds}")
    out: dict[str, list[str]] = {}
    for key, names in sets.items():
        parts = key.split("/")
        fold_parts = [p for p in parts if p.startswith("fold")]
        if not fold_parts:
            out[key] = list(names)
        elif fold_parts == [f"fold{fold}"]:
            out["/".join(p for p in parts if p != f"fold{fold}")] = list(names)
    return out


def ham_boxes(dataset: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """HAM's ``BBoxes.json`` -> DataFrame[image_id, label, x, y, w, h] (float32 pixels; x, y = top-left).

    ``dataset="nih"``: keys are file names, boxes ``[x, y, w, h]`` in 1024-px coordinates; labels become
    ``labels.NIH_LABELS`` names ("Infiltrate" -> "Infiltration").
    ``dataset="chexpert"``: keys are paths like ``train/patient40093/study4/view1_frontal.jpg`` (kept as image_id),
    boxes ``[xmin, ymin, xmax, ymax]`` in original pixels, converted to x, y, w = xmax - xmin, h = ymax - ymin;
    labels keep HAM's underscores (``HAM_CHEXPERT_CLASSES``) with the misspelled keys 'edema' and
    'Enlarg_Cardiomediastinum' normalised. Images listed without any box are not rows; their ids are in
    ``frame.attrs["images_without_boxes"]``.
    ``path``: a BBoxes.json (.gz accepted); ``None`` reads the shipped copy.
    """
    if dataset not in ("nih", "chexpert"):
        raise ValueError(f"dataset must be 'nih' or 'chexpert', got {dataset!r}")
    source = Path(path).expanduser() if path is not None else FILES / "ham" / f"{dataset}_BBoxes.json.gz"
    try:
        opener = gzip.open if str(source).endswith(".gz") else open
        with opener(source, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read box file {source}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object {{image: {{class: [[...], ...]}}}}")
    spellings = NIH_BOX_SPELLINGS if dataset == "nih" else HAM_CHEXPERT_SPELLINGS
    known = NIH_LABELS if dataset == "nih" else HAM_CHEXPERT_CLASSES
    rows, empty = [], []
    for image_id, classes in data.items():
        if not classes:
            empty.append(image_id)
            continue
        for raw_label, boxes in classes.items():
            label = spellings.get(raw_label, raw_label)
            if label not in known:
                raise DataError(f"{source}: image {image_id!r}: unknown label {raw_label!r}; known: {known}")
            for box in boxes:
                if len(box) != 4:
                    raise DataError(f"{source}: image {image_id!r}, label {raw_label!r}: box {box} has not 4 numbers")
                a, b, c, d = (float(v) for v in box)
                if dataset == "chexpert":
                    if c < a or d < b:
                        raise DataError(f"{source}: image {image_id!r}, label {raw_label!r}: box {box} has "
                                        "xmax < xmin or ymax < ymin")
                    c, d = c - a, d - b
                rows.append((image_id, label, a, b, c, d))
    out = pd.DataFrame(rows, columns=["image_id", "label", "x", "y", "w", "h"])
    out[["x", "y", "w", "h"]] = out[["x", "y", "w", "h"]].astype(np.float32)
    out.attrs["images_without_boxes"] = empty
    out.attrs["source"] = str(source)
    return out


# -------------------------------------------------------------------------------------------------- CheXNet
def chexnet_lists(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The CheXNet 70/10/20 patient-disjoint split (AG-CNN's benchmark split).

    Reads ``{train,val,test}_list.txt`` (.gz accepted; each line ``<png> <14 x 0/1>`` in ``NIH_WANG_ORDER``)
    from ``root`` or the shipped copies. Returns DataFrame[image_id, split, 14 float32 label columns in
    NIH_WANG_ORDER] with 78,468 / 11,219 / 22,433 rows for the shipped files.
    """
    base = Path(root).expanduser() if root is not None else FILES / "chexnet"
    parts = []
    for split in ("train", "val", "test"):
        source = find_file(base, (f"{split}_list.txt",), "CheXNet split list")
        names = ["image_id"] + list(NIH_WANG_ORDER)
        raw = read_csv(source, sep=" ", header=None, names=names, dtype={"image_id": str},
                       skipinitialspace=True, on_bad_lines="error")
        values = raw[NIH_WANG_ORDER].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        bad = ~np.isin(values, (0.0, 1.0)).all(1) | raw["image_id"].isna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: line {pos + 1}: expected '<image> <14 x 0/1>', got "
                            f"{raw.iloc[pos].tolist()}")
        frame = pd.DataFrame({"image_id": raw["image_id"], "split": split})
        frame[NIH_WANG_ORDER] = values.astype(np.float32)
        parts.append(frame)
    out = pd.concat(parts, ignore_index=True)
    dup = out["image_id"].duplicated()
    if dup.any():
        raise DataError(f"{base}: image {out['image_id'][dup].iloc[0]!r} is in more than one CheXNet list")
    out.attrs["label_columns"] = list(NIH_WANG_ORDER)
    return out


# ---------------------------------------------------------------------------------------------------- MIMIC
def mimic_official(root: str | os.PathLike) -> pd.DataFrame:
    """MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-split.csv`` (.gz accepted) in ``root`` ->
    DataFrame[dicom_id, study_id, subject_id, split] (ids as str, split 'train' / 'val' / 'test')."""
    source = find_file(Path(root).expanduser(), ("mimic-cxr-2.0.0-split.csv",), "MIMIC official split")
    raw = read_csv(source, dtype=str)
    require_columns(raw, ("dicom_id", "study_id", "subject_id", "split"), source)
    out = raw[["dicom_id", "study_id", "subject_id", "split"]].copy()
    for col in out.columns:
        out[col] = out[col].str.strip()
    unknown = ~out["split"].str.lower().isin(_SPLIT_NAMES.keys())
    if unknown.any():
        pos = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(f"{source}: line {pos + 2}, column 'split': unknown split {out['split'].iloc[pos]!r}")
    out["split"] = out["split"].str.lower().map(_SPLIT_NAMES)
    return out


def chexclusion_test_subjects(path: str | os.PathLike) -> list[str]:
    """Subject ids of CheXclusion's MIMIC test set (``testSet_SubjID.csv``) as sorted strings.

    Accepts a CSV with a ``subject_id`` column (any case) or a single column of ids with or without a header.
    """
    path = Path(path).expanduser()
    raw = read_csv(path, dtype=str, header=None)
    if raw.empty:
        raise DataError(f"{path}: no subject ids")
    header = [str(v).strip().lower() for v in raw.iloc[0]]
    if "subject_id" in header:
        col = header.index("subject_id")
        values = raw.iloc[1:, col]
    elif raw.shape[1] == 1:
        values = raw.iloc[:, 0]
        if not str(values.iloc[0]).strip().isdigit():
            values = values.iloc[1:]
    else:
        # CheXclusion's file: an unnamed index column then the ids; take the last all-digit column
        cols = [c for c in raw.columns if raw.iloc[1:, c].astype(str).str.strip().str.isdigit().all()]
        if not cols:
            raise DataError(f"{path}: no column of subject ids (expected a 'subject_id' column)")
        values = raw.iloc[1:, cols[-1]]
    values = values.astype(str).str.strip()
    values = values.str.replace(r"\.0$", "", regex=True)
    bad = ~values.str.isdigit()
    if bad.any():
        raise DataError(f"{path}: subject id {values[bad].iloc[0]!r} is not a number")
    return sorted(set(values.tolist()), key=int)


def assign_split(frame: pd.DataFrame, lists: dict[str, Sequence[str]], column: str = "image_id",
                 missing: str = "unlisted") -> pd.DataFrame:
    """A copy of ``frame`` with ``split`` set from ``{split: [ids]}``; ids in no list get ``missing``."""
    require_columns(frame, (column,), "index frame")
    out = frame.copy()
    mapping: dict[str, str] = {}
    for split, ids in lists.items():
        for i in ids:
            if i in mapping and mapping[i] != split:
                raise DataError(f"id {i!r} is in both split {mapping[i]!r} and {split!r}")
            mapping[i] = split
    out["split"] = out[column].map(mapping).fillna(missing)
    return out
