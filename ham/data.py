"""HAM's data: the index (HAM layout, plain NIH layout, CheXpert boxes), HAM's split files, box masks and the joint
image + mask transforms (the spec's sections 2-4).

Layouts (``data.layout``):

* ``ham``: HAM's own layout ::

      root/images/*.png                    (or NIH's images_XXX/images/*.png: found the same way)
      root/Annotations/BBoxes.json         {"<img>.png": {"<Class>": [[x, y, w, h], ...]}}  (1024-px floats)
      root/Annotations/Tags.json           {"<img>.png": ["<Class>", ...]}  (NIH "Finding Labels")
      root/ImageSets/{Main,bbox}/...       optional; HAM's shipped copy is used when absent

  ``python -m ham.build_annotations --nih ROOT --out ROOT`` writes Annotations/ (and ImageSets/) from NIH's CSVs.
* ``nih``: the plain NIH layout read by ``shared.data.nih`` (Data_Entry_2017*.csv, BBox_List_2017.csv, images/).
* ``chexpert``: CheXpert read by ``shared.data.chexpert`` with HAM's CheXpert boxes
  (``shared.data.splits.ham_boxes("chexpert")``: 9 classes, xyxy -> xywh, misspelled keys normalised).

A split is named by a *list spec* (config keys ``data.train``, ``data.train_boxes``, ``data.val``, ...):
``Main/train_0.7_0.7`` / ``bbox/test`` (a file of HAM's ImageSets; fold files are taken from ``data.fold``,
unless the name carries its fold: ``bbox/fold3/test`` is fold 3's whatever ``data.fold``),
``split:train`` / ``split:test`` (the index's official split column), ``boxes:test`` / ``boxes:all`` (the images
with boxes in that split / anywhere), ``all``, or ``A - B`` (the images of A not in B). An image named by a list but absent from the index is an error.

Boxes -> masks (HAM): per class, rows floor(y):floor(y+h), cols floor(x):floor(x+w) at the ORIGINAL resolution,
OR over the class's boxes, resized NEAREST (PIL's pixel-centre rule) with the image.
"""
from __future__ import annotations

import json
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from shared.data import nih
from shared.data._common import DataError
from shared.data.images import check_frame_images, load_image, to_rgb
from shared.data.labels import NIH_LABELS, NIH_NO_FINDING, NIH_WANG_ORDER
from shared.data.splits import HAM_CHEXPERT_CLASSES, assign_split, ham_boxes, ham_imagesets, nih_official
from shared.data.transforms import HALF_MEAN, HALF_STD
from shared.metrics.localization import boxes_to_mask

from .losses import crf_refine_mask, image_class_crf_params

# CheXpert CSV column -> HAM's CheXpert class name
CHEXPERT_TO_HAM = {c.replace("_", " "): c for c in HAM_CHEXPERT_CLASSES}


@dataclass
class DataConfig:
    layout: Literal["ham", "nih", "chexpert"] = "ham"
    root: str = "data/nih"
    imagesets: str | None = None      # dir holding ImageSets/ or a tar of it; None: root/ImageSets, else shipped
    boxes: str | None = None          # BBoxes.json (ham/chexpert) or BBox_List_2017.csv dir (nih); None: default
    fold: int = 1
    train: str = "Main/train_val_list"
    train_boxes: str | None = None    # box-supervised subset of train (flag = 1); None: no box supervision
    val: str | None = None            # None: faithful = validate on the test lists; see honest_validation
    val_boxes: str | None = None
    test: str = "Main/test_list"
    test_boxes: str | None = "Main/test_bboxs"
    honest_validation: bool = False   # True: carve a patient-disjoint val set out of train (when val is None)
    val_fraction: float = 0.1
    img_size: int = 512
    scale_max_pct: int = 12           # train: resize to int((1 + k/100) * img_size), k in 0..12, then crop
    box_reference_size: int | None = None   # boxes refer to a square image of this size (None: the file's pixels)
    box_sizes: str | None = None      # CSV image_id,width,height: per image, the size the boxes refer to
    box_outside: str = "error"        # a box beyond its image after scaling: error, or clip (counted warning)
    use_crf: bool = False             # dense-CRF refinement of the training box masks (needs pydensecrf2)
    chexpert_uncertain: str = "zeros"
    nih_class_order: Literal["wang", "alphabetical"] = "wang"   # NIH classes (heads, tables, log lines) in the
    #                                   original's Wang order (its released models' cls_fc rows); alphabetical = ours before
    on_missing: Literal["error", "warn"] = "error"   # a listed image absent: stop naming it, or warn + skip
    verify_images: bool = False   # decode every listed image once before training (parallel, progress bar)
    on_bad_image: Literal["error", "warn"] = "error"   # an undecodable image: stop naming it, or warn + skip
    max_images: int = 0               # >0: keep the first N images of each list (smoke runs); the training
    #                                   box-supervised images are those left in the truncated train list


# ----------------------------------------------------------------------------------------------- index
def _patient_from_name(names: pd.Series) -> pd.Series:
    """NIH file names 00000001_000.png -> patient "1"; other names are their own patient."""
    m = names.str.extract(r"^(\d+)_\d+\.\w+$")[0]
    pid = m.str.lstrip("0").replace("", "0")
    return pid.fillna(names)


def _read_ham_layout(root: Path) -> pd.DataFrame:
    tags_path = root / "Annotations" / "Tags.json"
    if not tags_path.is_file():
        raise DataError(f"HAM layout: {tags_path} not found (expected root/images/, root/Annotations/"
                        f"{{BBoxes.json,Tags.json}}); build it with: python -m ham.build_annotations --nih {root} "
                        f"--out {root}")
    tags = json.loads(tags_path.read_text())
    names = pd.Series(list(tags.keys()), dtype=object)
    known = set(NIH_LABELS)
    labels = np.zeros((len(names), len(NIH_LABELS)), np.float32)
    col = {c: j for j, c in enumerate(NIH_LABELS)}
    for i, name in enumerate(names):
        for t in tags[name]:
            t = {"Infiltrate": "Infiltration"}.get(t, t)
            if t == NIH_NO_FINDING:
                continue
            if t not in known:
                raise DataError(f"{tags_path}: image {name!r}: unknown class {t!r}; known: {NIH_LABELS}")
            labels[i, col[t]] = 1.0
    found = nih.find_images(root)
    missing = ~names.isin(found.keys())
    if missing.all() and len(names):
        raise DataError(f"HAM layout: none of the {len(names)} images of {tags_path} is under {root}/images/")
    frame = pd.DataFrame({"path": names.map(found), "image_id": names, "patient_id": _patient_from_name(names)})
    official = nih_official(root)   # root/{train_val_list,test_list}.txt, else NIH's shipped lists
    frame["split"] = assign_split(frame[["image_id"]], {"train": official["train"], "test": official["test"]})["split"]
    frame[NIH_LABELS] = labels
    frame.attrs["missing_files"] = names[missing].tolist()
    frame.attrs["label_columns"] = list(NIH_LABELS)
    return frame


def _boxes_from_frame(df: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, list]] = {}
    for image_id, label, x, y, w, h in df[["image_id", "label", "x", "y", "w", "h"]].itertuples(index=False):
        out.setdefault(image_id, {}).setdefault(label, []).append((x, y, w, h))
    return {k: {c: np.asarray(v, np.float64) for c, v in d.items()} for k, d in out.items()}


def _chexpert_index(cfg: DataConfig, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from shared.data import chexpert
    frame = chexpert.read_index(root, split="all", uncertain=cfg.chexpert_uncertain, on_missing=cfg.on_missing)
    for csv_name, ham_name in CHEXPERT_TO_HAM.items():   # "Pleural Effusion" -> "Pleural_Effusion", ...
        frame[ham_name] = frame[csv_name].fillna(0.0).astype(np.float32)
    frame.attrs["label_columns"] = list(HAM_CHEXPERT_CLASSES)
    # image_id is the path below the dataset folder (train/patientX/studyY/viewZ.jpg): the key of HAM's boxes
    boxes = ham_boxes("chexpert", cfg.boxes)
    return frame, boxes


def nih_classes(cfg: DataConfig) -> list[str]:
    """The 14 NIH classes in the configured order (the row order of ``cls_fc`` and of every table)."""
    return list(NIH_WANG_ORDER if cfg.nih_class_order == "wang" else NIH_LABELS)


def class_names(cfg: DataConfig) -> list[str]:
    """The classes HAM trains on for ``cfg.layout``, in its heads' order."""
    return list(HAM_CHEXPERT_CLASSES) if cfg.layout == "chexpert" else nih_classes(cfg)


def load_index(cfg: DataConfig) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]], list[str]]:
    """(index frame, {image_id: {class: (K,4) xywh}}, class names) for ``cfg.layout``."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (layout {cfg.layout!r}; see ham/README.md)")
    if cfg.layout == "ham":
        frame = _read_ham_layout(root)
        box_path = Path(cfg.boxes) if cfg.boxes else root / "Annotations" / "BBoxes.json"
        boxes_df = ham_boxes("nih", box_path) if box_path.exists() else ham_boxes("nih")
    elif cfg.layout == "nih":
        frame = nih.read_index(root, check_files=True, on_missing=cfg.on_missing)
        boxes_df = nih.read_boxes(cfg.boxes or root)
    elif cfg.layout == "chexpert":
        frame, boxes_df = _chexpert_index(cfg, root)
    else:
        raise DataError(f"unknown data.layout {cfg.layout!r}; expected ham, nih or chexpert")
    frame = check_frame_images(frame.reset_index(drop=True), cfg.verify_images, cfg.on_bad_image)
    return frame, _boxes_from_frame(boxes_df), class_names(cfg)


# ----------------------------------------------------------------------------------------------- splits
def _imagesets_root(cfg: DataConfig):
    if cfg.imagesets:
        return cfg.imagesets
    local = Path(cfg.root).expanduser() / "ImageSets"
    return local.parent if local.is_dir() else None


def resolve_list(spec: str, cfg: DataConfig, frame: pd.DataFrame, boxes: dict, truncate: bool = True) -> list[str]:
    """Image ids named by a list spec (see the module docstring), in list order; with ``truncate`` and
    ``cfg.max_images > 0`` only the first ``max_images`` of them."""
    spec = spec.strip()
    if " - " in spec:   # "A - B": the images of A that are not in B, in A's order
        first, rest = spec.split(" - ", 1)
        drop = set(resolve_list(rest, cfg, frame, boxes, truncate=False))
        ids = [i for i in resolve_list(first, cfg, frame, boxes, truncate=False) if i not in drop]
        return ids[:cfg.max_images] if truncate and cfg.max_images > 0 else ids
    if spec == "all":
        ids = frame["image_id"].tolist()
    elif spec.startswith("split:"):
        ids = frame.loc[frame["split"] == spec[6:], "image_id"].tolist()
    elif spec.startswith("boxes:"):
        which = spec[6:]
        sel = frame["image_id"].isin(boxes.keys())
        if which != "all":
            sel &= frame["split"] == which
        ids = frame.loc[sel, "image_id"].tolist()
    else:
        # a fold written into the name ("bbox/fold3/test") is honoured; otherwise the fold is data.fold
        explicit = re.search(r"(^|/)fold\d+/", spec) is not None
        sets = ham_imagesets(fold=None if explicit else cfg.fold, root=_imagesets_root(cfg))
        if spec not in sets:
            where = "" if explicit else f" (fold files named without 'foldN/' are read from data.fold={cfg.fold})"
            raise DataError(f"split list {spec!r} is not a HAM ImageSets file{where}; known: {sorted(sets)[:12]} ...")
        ids = sets[spec]
    known = set(frame["image_id"])
    absent = [i for i in ids if i not in known]
    if absent:
        raise DataError(f"split list {spec!r}: {len(absent)} of {len(ids)} images are not in the index of "
                        f"{cfg.root} (layout {cfg.layout!r}), e.g. {absent[:3]}")
    no_file = set(frame.attrs.get("missing_files", ())) & set(ids)
    if no_file:
        raise DataError(f"split list {spec!r}: {len(no_file)} images have no image file under {cfg.root}/images, "
                        f"e.g. {sorted(no_file)[:3]}")
    if truncate and cfg.max_images > 0:
        ids = ids[:cfg.max_images]
    return ids


def select(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    pos = pd.Series(np.arange(len(frame)), index=frame["image_id"])
    return frame.iloc[pos.loc[ids].to_numpy()].reset_index(drop=True)


@dataclass
class Splits:
    train: pd.DataFrame
    train_box_ids: set
    val: pd.DataFrame | None          # classification frame of the validation set (None: no validation)
    val_box_ids: set
    test: pd.DataFrame
    test_box_ids: set
    notes: list


def build_splits(cfg: DataConfig, frame: pd.DataFrame, boxes: dict) -> Splits:
    notes = []
    train_ids = resolve_list(cfg.train, cfg, frame, boxes)
    # the box-supervised list is checked against the whole train list, then (max_images) cut to the images that
    # remain in the truncated train list: both lists are truncated consistently
    train_box = set(resolve_list(cfg.train_boxes, cfg, frame, boxes, truncate=False)) if cfg.train_boxes else set()
    if cfg.max_images > 0 and train_box:
        full_train = set(resolve_list(cfg.train, cfg, frame, boxes, truncate=False))
        outside = train_box - full_train
        if outside:
            raise DataError(f"{len(outside)} images of {cfg.train_boxes!r} are not in {cfg.train!r}, "
                            f"e.g. {sorted(outside)[:3]}")
        kept = train_box & set(train_ids)
        notes.append(f"data.max_images={cfg.max_images}: {len(train_ids)} train images, {len(kept)} of the "
                     f"{len(train_box)} box-supervised images of {cfg.train_boxes!r} among them")
        train_box = kept
    test_ids = resolve_list(cfg.test, cfg, frame, boxes)
    test_box = set(resolve_list(cfg.test_boxes, cfg, frame, boxes)) if cfg.test_boxes else set()
    test_frame = select(frame, list(dict.fromkeys(test_ids + sorted(test_box - set(test_ids)))))
    train_frame = select(frame, train_ids)
    if cfg.val:
        val_frame = select(frame, resolve_list(cfg.val, cfg, frame, boxes))
        val_box = set(resolve_list(cfg.val_boxes, cfg, frame, boxes)) if cfg.val_boxes else set()
        extra = sorted(val_box - set(val_frame["image_id"]))
        if extra:
            val_frame = pd.concat([val_frame, select(frame, extra)], ignore_index=True)
    elif cfg.honest_validation:
        tmp = train_frame.assign(split="train")
        from shared.data.splits import patient_holdout
        tmp = patient_holdout(tmp, cfg.val_fraction, seed=0)
        val_frame = tmp[tmp["split"] == "val"].reset_index(drop=True)
        train_frame = tmp[tmp["split"] == "train"].reset_index(drop=True)
        val_box = set(val_frame["image_id"]) & set(boxes)
        train_box &= set(train_frame["image_id"])
        notes.append(f"honest validation: patient-disjoint {cfg.val_fraction:.0%} of train (seed 0); the original "
                     "selected the checkpoint on the test set")
    else:
        val_frame, val_box = test_frame, test_box
        notes.append("checkpoint selected on the test split (faithful to the original)")
    missing_box = train_box - set(train_frame["image_id"])
    if missing_box:
        raise DataError(f"{len(missing_box)} images of {cfg.train_boxes!r} are not in {cfg.train!r}, "
                        f"e.g. {sorted(missing_box)[:3]}")
    return Splits(train_frame, train_box, val_frame, val_box, test_frame, test_box, notes)


# ------------------------------------------------------------------------------------------- dataset
def read_box_sizes(path: str | None) -> dict[str, tuple[float, float]] | None:
    """``data.box_sizes`` -> {image_id: (width, height)}: the size of the image each image's boxes were drawn on
    (e.g. CheXpert's full-resolution originals). Either a CSV image_id,width,height, or the
    ``prepare_sizes.csv`` that ``shared.data.prepare`` writes next to a resized copy (path, orig_width,
    orig_height; its paths are keyed by every trailing part, so ``train/patientX/.../view1_frontal.jpg`` finds
    ``CheXpert-v1.0/train/patientX/.../view1_frontal.jpg``)."""
    if not path:
        return None
    try:
        table = pd.read_csv(Path(path).expanduser(), dtype={"image_id": str, "path": str})
    except Exception as exc:
        raise DataError(f"data.box_sizes: cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if {"path", "orig_width", "orig_height"} <= set(table.columns):     # prepare's sizes file
        parts = table["path"].str.split("/")
        table = pd.DataFrame({"image_id": ["/".join(p[i:]) for p in parts for i in range(len(p))],
                              "width": table["orig_width"].repeat(parts.str.len()).to_numpy(),
                              "height": table["orig_height"].repeat(parts.str.len()).to_numpy()})
    missing = {"image_id", "width", "height"} - set(table.columns)
    if missing:
        raise DataError(f"data.box_sizes {path}: missing columns {sorted(missing)} (expected image_id,width,height "
                        "or prepare's prepare_sizes.csv)")
    bad = ~((table["width"] > 0) & (table["height"] > 0))
    if bad.any():
        raise DataError(f"data.box_sizes {path}: non-positive size for {table.loc[bad, 'image_id'].tolist()[:3]}")
    return {str(i): (float(w), float(h)) for i, w, h in table[["image_id", "width", "height"]].itertuples(index=False)}


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file as ``load_image`` decodes it (EXIF orientation applied), from the header
    when PIL can read it."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):   # rotated by 90 degrees: exif_transpose swaps
                w, h = h, w
            return int(w), int(h)
    except Exception:   # DICOM and the like: decode
        arr = load_image(path)
        return int(arr.shape[1]), int(arr.shape[0])


def box_scales(image_id: str, file_size: tuple[int, int], reference: int | None,
               sizes: dict | None) -> tuple[float, float]:
    """(sx, sy) taking an image's boxes to the pixels of its file: from the per-image size the boxes refer to
    (``data.box_sizes``), else a square reference size (``data.box_reference_size``), else 1 (the file's pixels)."""
    w, h = file_size
    if sizes is not None:
        if image_id not in sizes:
            raise DataError(f"data.box_sizes has no size for the box image {image_id!r}")
        ow, oh = sizes[image_id]
        return w / ow, h / oh
    if reference:
        return w / float(reference), h / float(reference)
    return 1.0, 1.0


def check_box_geometry(ids, paths, boxes: dict, reference: int | None, sizes: dict | None,
                       outside: str = "error", tol: float = 1.0) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Per box image of a dataset: its (sx, sy), after checking that every box lies inside the image once scaled
    (``tol`` pixels of slack). A box beyond its image means the boxes refer to another resolution (CheXpert's
    boxes are in the pixels of the full-size originals, whose size varies: on ``-small`` images such boxes would
    be clipped to empty masks). ``outside="error"`` raises naming the images; ``"clip"`` clips them (as the mask
    rasterisation does) and returns a note counting them."""
    if outside not in ("error", "clip"):
        raise DataError(f"data.box_outside must be 'error' or 'clip', got {outside!r}")
    scales, bad, empty = {}, [], 0
    for image_id, path in zip(ids, paths):
        per_class = boxes.get(image_id)
        if not per_class or image_id in scales:
            continue
        if sizes is None and not reference and "chexpert-v1.0-small" in str(path).lower():
            raise DataError(f"box image {image_id!r} is a CheXpert-v1.0-small file ({path}) but HAM's CheXpert "
                            "boxes are in the pixels of the full-resolution originals, whose size varies per image: "
                            "give data.box_sizes (CSV image_id,width,height of the originals) or use the "
                            "full-resolution images")
        w, h = image_size(path)
        sx, sy = box_scales(image_id, (w, h), reference, sizes)
        scales[image_id] = (sx, sy)
        for name, bxs in per_class.items():
            for x, y, bw, bh in np.asarray(bxs, np.float64).reshape(-1, 4):
                x0, y0, x1, y1 = x * sx, y * sy, (x + bw) * sx, (y + bh) * sy
                if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
                    bad.append((image_id, name, [float(v) for v in (x, y, bw, bh)], (w, h), (sx, sy)))
                    if min(x1, w) <= max(x0, 0) or min(y1, h) <= max(y0, 0):
                        empty += 1
    notes = []
    if bad:
        what = (f"{len(bad)} boxes of {len({b[0] for b in bad})} images lie beyond their image once scaled "
                f"({empty} of them entirely, i.e. an empty mask), e.g. image {bad[0][0]!r} {bad[0][1]} box "
                f"xywh={bad[0][2]} on a {bad[0][3][0]}x{bad[0][3][1]} file at scale (x {bad[0][4][0]:.4g}, "
                f"y {bad[0][4][1]:.4g})")
        if outside == "error":
            raise DataError(f"{what}. The boxes refer to another resolution than the image files (CheXpert's boxes "
                            "are in the pixels of the full-resolution originals, whose size varies per image): use "
                            "the full-resolution images, or give data.box_sizes (CSV image_id,width,height of the "
                            "images the boxes were drawn on), or data.box_reference_size for a square reference; "
                            "data.box_outside=clip clips them instead (counted)")
        notes.append(f"data.box_outside=clip: {what}; clipped to the image")
        warnings.warn(notes[-1], stacklevel=2)
    return scales, notes


def box_args(cfg: DataConfig) -> dict:
    """The box-geometry keyword arguments of :class:`HAMDataset` from the data config."""
    return {"box_reference_size": cfg.box_reference_size, "box_sizes": read_box_sizes(cfg.box_sizes),
            "box_outside": cfg.box_outside}


class HAMDataset(Dataset):
    """Items ``{"image" (3,S,S) normalised 0.5/0.5, "labels" (C,), "masks" (C,S,S) uint8, "flag" (),
    "bbox_tag" (C,), "has_box" (C,), "index"}``.

    ``train=True``: HAM's joint augmentation (resize to int((1+k/100)S) bilinear / nearest, random S crop, hflip
    0.5); masks only for images in ``box_ids`` (flag = 1), zeros elsewhere. ``train=False``: resize to S x S; masks
    for every image with boxes (GT of the localisation metrics). ``with_masks=False``: ``masks`` is an empty
    tensor (classification-only evaluation).
    """

    def __init__(self, frame: pd.DataFrame, classes: list[str], boxes: dict, box_ids: set, train: bool,
                 img_size: int = 512, scale_max_pct: int = 12, box_reference_size: int | None = None,
                 with_masks: bool = True, crf: dict | None = None, box_sizes: dict | None = None,
                 box_outside: str = "error"):
        self.paths = frame["path"].astype(str).to_numpy()
        self.ids = frame["image_id"].astype(str).to_numpy()
        self.labels = frame[classes].to_numpy(np.float32)
        self.classes, self.col = classes, {c: j for j, c in enumerate(classes)}
        self.boxes = {k: v for k, v in boxes.items() if k in box_ids}
        self.train, self.size, self.scale_max_pct = train, img_size, scale_max_pct
        self.box_reference_size, self.with_masks, self.crf = box_reference_size, with_masks, crf
        # (sx, sy) of every box image, checked once here: boxes beyond their image are an error (or clipped, noted)
        self.box_scales, self.notes = ({}, []) if not (with_masks and self.boxes) else check_box_geometry(
            self.ids, self.paths, self.boxes, box_reference_size, box_sizes, box_outside)

    def __len__(self) -> int:
        return len(self.paths)

    def _class_masks(self, image_id: str, rgb: Image.Image, out_size=None):
        """(K,H,W) uint8 masks and (K,) class indices of the image's box classes."""
        per_class = self.boxes.get(image_id, {})
        w, h = rgb.size
        sx, sy = self.box_scales.get(image_id) or box_scales(image_id, (w, h), self.box_reference_size, None)
        cls_idx, masks = [], []
        for name, bxs in per_class.items():
            if name not in self.col:
                continue
            xywh = np.asarray(bxs, np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])
            m = boxes_to_mask(xywh, h, w, out_size=out_size, nearest="pil").astype(np.uint8)
            params = None if self.crf is None else self.crf.get(image_id, {}).get(name)
            if params is not None:
                m = crf_refine_mask(np.asarray(rgb), m, *params)
            cls_idx.append(self.col[name])
            masks.append(m)
        if not masks:
            return None, []
        return torch.from_numpy(np.stack(masks)), cls_idx

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        rgb = to_rgb(load_image(self.paths[index]))
        labels = torch.from_numpy(self.labels[index].copy())
        s, c = self.size, len(self.classes)
        image_id = self.ids[index]
        flag = image_id in self.boxes
        if self.train:
            k = random.randint(0, self.scale_max_pct)
            big = int((1 + k / 100) * s)
            i, j = random.randint(0, big - s), random.randint(0, big - s)
            flip = random.random() < 0.5
            img = TF.resize(rgb, [big, big], interpolation=InterpolationMode.BILINEAR)
            img = TF.crop(img, i, j, s, s)
            masks_k, cls_idx = self._class_masks(image_id, rgb) if (flag and self.with_masks) else (None, [])
            if masks_k is not None:
                masks_k = TF.resize(masks_k, [big, big], interpolation=InterpolationMode.NEAREST_EXACT)
                masks_k = TF.crop(masks_k, i, j, s, s)
            if flip:
                img = TF.horizontal_flip(img)
                masks_k = TF.horizontal_flip(masks_k) if masks_k is not None else None
        else:
            img = TF.resize(rgb, [s, s], interpolation=InterpolationMode.BILINEAR)
            masks_k, cls_idx = self._class_masks(image_id, rgb, out_size=(s, s)) if (flag and self.with_masks) \
                else (None, [])
        x = TF.normalize(TF.to_dtype(TF.to_image(img), torch.float32, scale=True), HALF_MEAN, HALF_STD)
        has_box = torch.zeros(c)
        if cls_idx:
            has_box[cls_idx] = 1.0
        if self.with_masks:
            masks = torch.zeros(c, s, s, dtype=torch.uint8)
            if masks_k is not None:
                masks[cls_idx] = masks_k
        else:
            masks = torch.zeros(0, dtype=torch.uint8)
        bbox_tag = has_box.clone() if flag else labels.clone()
        return {"image": x, "labels": labels, "masks": masks, "flag": torch.tensor(float(flag)),
                "bbox_tag": bbox_tag, "has_box": has_box, "index": index}


def crf_table_for(cfg: DataConfig, boxes: dict) -> dict | None:
    """{image: {class: (sxy, srgb)}} when use_crf is on, else None: per image and class, from min(mean w, mean h)
    of that class's boxes in the image (in the box file's units, 1024 px for NIH, as the original)."""
    if not cfg.use_crf:
        return None
    plain = {k: {c: v.tolist() for c, v in d.items()} for k, d in boxes.items()}
    return image_class_crf_params(plain)
