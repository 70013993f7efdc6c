"""NIH ChestX-ray14 (Wang et al. 2017) -> one index DataFrame.

Expected layout (either the NIH Box download or Kaggle's ``nih-chest-xrays/data``)::

    root/Data_Entry_2017_v2020.csv   or Data_Entry_2017.csv (either may be .gz; v2020 is preferred when both exist)
    root/BBox_List_2017.csv          984 boxes (only for read_boxes)
    root/train_val_list.txt          official split (86,524 / 25,596 images), optional (.gz accepted)
    root/test_list.txt
    root/images/*.png                NIH Box layout (the images_XX.tar.gz archives extract to images/)
    root/images_001/images/*.png     Kaggle layout (images_001 ... images_012); both layouts may be mixed

Example::

    from shared.data import nih
    frame = nih.read_index("/data/nih")                   # 112,120 rows, split 'train' / 'test'
    frame = nih.read_index("/data/nih", no_finding="class")   # + a 15th column "No Finding"
    boxes = nih.read_boxes("/data/nih")                   # image_id, label, x, y, w, h (1024-px coordinates)

Columns of the index: ``path`` (absolute), ``image_id`` (``00000001_000.png``), ``patient_id`` (str, no leading
zeros: ``"1"``), ``split`` ('train' for train_val_list, 'test' for test_list, 'unlisted' for an image in neither —
warned), ``follow_up`` (int), ``age`` (years, float), ``sex`` ('M'/'F'), ``view`` ('PA'/'AP'), ``finding_labels``
(the raw '|'-joined string), then one float32 0/1 column per label in ``labels.NIH_LABELS`` (alphabetical) order,
plus "No Finding" last with ``no_finding="class"``. ``frame.attrs["label_columns"]`` lists the label columns.

Image files are found by listing each image directory once (``os.scandir``), never one ``stat`` per row.
A missing image raises ``FileNotFoundError`` naming it (``on_missing="warn"``: warn with the count and skip those
rows); ``check_files=False`` skips the check (paths then point to ``root/images/<name>`` when not found).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import (DataError, apply_missing, check_on_missing, find_file, read_csv, read_text_lines,
                      require_columns, scan_files)
from .labels import NIH_BOX_SPELLINGS, NIH_LABELS, NIH_NO_FINDING

__all__ = ["read_index", "read_boxes", "find_images", "DATA_ENTRY_NAMES", "BOX_LIST_NAMES"]

DATA_ENTRY_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BOX_LIST_NAMES = ("BBox_List_2017.csv",)
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
OPTIONAL_COLUMNS = {"Follow-up #": "follow_up", "Patient Age": "age", "Patient Gender": "sex",
                    "View Position": "view"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_images(root: str | os.PathLike) -> dict[str, str]:
    """{file name: absolute path} of every image under ``root/images/`` and ``root/images_*/images/`` (and
    ``root/images_*/`` itself), one directory listing each. A name found twice raises, naming both paths."""
    root = Path(root)
    dirs = [root / "images"]
    for sub in sorted(root.glob("images_*")):
        if sub.is_dir():
            dirs.extend([sub / "images", sub])
    found: dict[str, str] = {}
    for d in dirs:
        for name, path in scan_files(d, _IMAGE_SUFFIXES).items():
            if name in found and found[name] != path:
                raise DataError(f"image {name} found twice: {found[name]} and {path}")
            found[name] = path
    return found


def _official_split(root: Path, image_ids: pd.Series) -> pd.Series:
    train = find_file(root, ("train_val_list.txt",), "NIH split", required=False)
    test = find_file(root, ("test_list.txt",), "NIH split", required=False)
    if train is None and test is None:
        warnings.warn(f"no train_val_list.txt / test_list.txt in {root}: split is 'unlisted' for every image; "
                      "splits.assign_split(frame, splits.nih_official()) applies the shipped official lists",
                      stacklevel=3)
        return pd.Series("unlisted", index=image_ids.index)
    if (train is None) != (test is None):
        raise DataError(f"{root}: found only one of train_val_list.txt / test_list.txt ({train or test})")
    train_ids, test_ids = set(read_text_lines(train)), set(read_text_lines(test))
    both = train_ids & test_ids
    if both:
        raise DataError(f"{len(both)} images are in both {train} and {test}, e.g. {sorted(both)[:3]}")
    split = np.where(image_ids.isin(train_ids), "train", np.where(image_ids.isin(test_ids), "test", "unlisted"))
    n_unlisted = int((split == "unlisted").sum())
    if n_unlisted:
        warnings.warn(f"{n_unlisted} images of the label table are in neither {train.name} nor {test.name}; "
                      "their split is 'unlisted'", stacklevel=3)
    return pd.Series(split, index=image_ids.index)


def _label_matrix(finding_labels: pd.Series, source: object) -> pd.DataFrame:
    """0/1 float32 columns for every name in the '|'-joined strings; an unknown name raises naming its line.

    Parses each distinct string once (the real table has ~800 distinct combinations for 112,120 rows)."""
    codes, uniques = pd.factorize(finding_labels, use_na_sentinel=False)
    known = list(NIH_LABELS) + [NIH_NO_FINDING]
    col = {name: j for j, name in enumerate(known)}
    table = np.zeros((len(uniques), len(known)), dtype=np.float32)
    for u, text in enumerate(uniques):
        for name in str(text).split("|"):
            name = name.strip()
            if name not in col:
                pos = int(np.flatnonzero(codes == u)[0])
                raise DataError(f"{source}: line {pos + 2}, column 'Finding Labels': unknown label {name!r} in "
                                f"{text!r}; known: {sorted(known)}")
            table[u, col[name]] = 1.0
    return pd.DataFrame(table[codes], columns=known, index=finding_labels.index)


def read_index(root: str | os.PathLike, no_finding: str = "zero", check_files: bool = True,
               on_missing: str = "error", data_entry: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read NIH ChestX-ray14 under ``root`` into the index DataFrame described in the module docstring.

    ``no_finding``: ``"zero"`` ("No Finding" = all 14 labels zero) or ``"class"`` (an extra 15th column
    "No Finding", as AG-CNN's paper uses). ``data_entry``: an explicit label-table path (default: found in root).
    """
    if no_finding not in ("zero", "class"):
        raise ValueError(f"no_finding must be 'zero' or 'class', got {no_finding!r}")
    check_on_missing(on_missing)
    root = Path(root).expanduser().resolve()
    source = Path(data_entry) if data_entry is not None else find_file(root, DATA_ENTRY_NAMES, "NIH label table")
    raw = read_csv(source, dtype={"Image Index": str, "Finding Labels": str, "Patient ID": str})
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, REQUIRED_COLUMNS, source)
    for col in REQUIRED_COLUMNS:
        empty = raw[col].isna()
        if empty.any():
            pos = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{source}: line {pos + 2}, column {col!r} is empty")
    dup = raw["Image Index"].duplicated()
    if dup.any():
        raise DataError(f"{source}: image {raw['Image Index'][dup].iloc[0]!r} listed more than once "
                        f"({int(dup.sum())} duplicates)")

    frame = pd.DataFrame({"image_id": raw["Image Index"].str.strip()})
    frame["patient_id"] = raw["Patient ID"].str.strip().str.lstrip("0").replace("", "0")
    frame["split"] = _official_split(root, frame["image_id"])
    for col, name in OPTIONAL_COLUMNS.items():
        if col in raw.columns:
            frame[name] = raw[col]
    if "age" in frame:
        frame["age"] = pd.to_numeric(frame["age"].astype(str).str.rstrip("Yy"), errors="coerce").astype("float32")
    frame["finding_labels"] = raw["Finding Labels"].str.strip()

    dummies = _label_matrix(frame["finding_labels"], source)
    label_columns = list(NIH_LABELS) + ([NIH_NO_FINDING] if no_finding == "class" else [])
    for lab in label_columns:
        frame[lab] = dummies[lab].to_numpy(np.float32)
    clash = (dummies[NIH_NO_FINDING] > 0) & (dummies[list(NIH_LABELS)].sum(axis=1) > 0)
    if clash.any():
        pos = int(np.flatnonzero(clash.to_numpy())[0])
        raise DataError(f"{source}: line {pos + 2}: 'No Finding' together with a finding: "
                        f"{frame['finding_labels'].iloc[pos]!r}")

    found = find_images(root)
    default = str(root / "images") + os.sep + frame["image_id"].astype(object)
    frame.insert(0, "path", frame["image_id"].map(found).astype(object).fillna(default))
    frame.attrs["label_columns"] = label_columns
    frame.attrs["source"] = str(source)
    if check_files:
        present = frame["image_id"].isin(found.keys()).to_numpy()
        if not present.any() and len(frame):
            hint = f"no images found under {root}/images/ or {root}/images_*/images/"
            present_msg = f"NIH {hint}"
        else:
            present_msg = f"NIH images under {root}"
        frame = apply_missing(frame, present, on_missing, present_msg)
    return frame.reset_index(drop=True)


def read_boxes(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """NIH's box list -> DataFrame[image_id, label, x, y, w, h] (float32 pixels of the 1024x1024 images).

    ``root`` holds ``BBox_List_2017.csv`` (.gz accepted); ``None`` reads the copy shipped in
    ``shared/data/files/nih``. The box list's spelling "Infiltrate" becomes "Infiltration"
    (``labels.NIH_BOX_SPELLINGS``); any other unknown label raises naming its line.
    """
    base = Path(root).expanduser() if root is not None else Path(__file__).parent / "files" / "nih"
    source = find_file(base, BOX_LIST_NAMES, "NIH box list")
    raw = read_csv(source, dtype={"Image Index": str, "Finding Label": str})
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, ("Image Index", "Finding Label"), source)
    start = list(raw.columns).index("Finding Label") + 1
    coords = raw.iloc[:, start:start + 4]
    if coords.shape[1] != 4:
        raise DataError(f"{source}: expected 4 box columns [x, y, w, h] after 'Finding Label', "
                        f"found {list(coords.columns)}")
    values = coords.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = np.isnan(values).any(1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: line {pos + 2}: box coordinates {coords.iloc[pos].tolist()} are not numbers")
    labels = raw["Finding Label"].str.strip().replace(NIH_BOX_SPELLINGS)
    unknown = ~labels.isin(NIH_LABELS)
    if unknown.any():
        pos = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(f"{source}: line {pos + 2}, column 'Finding Label': unknown label {labels.iloc[pos]!r}; "
                        f"known: {NIH_LABELS}")
    out = pd.DataFrame({"image_id": raw["Image Index"].str.strip(), "label": labels})
    for i, name in enumerate("xywh"):
        out[name] = values[:, i].astype(np.float32)
    out.attrs["source"] = str(source)
    return out
