"""ADNet's four dataset settings (spec section 3) on the shared readers, its transforms, the ALL label union.

    frame, labels = build_frame(cfg.data)            # one index: split 'train' / ('val') / 'test' + label columns
    train_set = make_dataset(frame, "train", labels, train_transform(cfg.data))

Settings:

* ``nih``: official lists (train_val_list 86,524 -> 'train', test_list 25,596 -> 'test'); 14 labels alphabetical;
  "No Finding" = all zero.
* ``mimic``: MIMIC-CXR-JPG, NegBio labels joined on (subject, study), uncertain (-1) and blank -> 0, all views;
  test = subjects of CheXclusion's ``testSet_SubjID.csv``, everything else train; 14 labels alphabetical.
  Images are squashed to ``data.mimic_squash`` (384) squares first, as the original's pre-resized copies were.
* ``chexpert``: CheXpert-v1.0-small, frontal only, [Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural
  Effusion], U-Ones for Edema and Atelectasis, U-Zeros for the others, blank -> 0; official valid.csv = test.
* ``all``: the three training sets together, 21-class union (``ALL_LABELS``), held-out = NIH test + MIMIC test +
  CheXpert valid. NIH names map to the union's (Effusion -> Pleural Effusion, Pleural_Thickening -> Pleural
  Thickening); "No Finding" = 1 iff no other finding is positive (Support Devices does not count, as in the
  CheXpert labeler) — the original set it to 1 whenever a finding WAS positive (inverted) and spelled 'Mass' as
  'Mas' (so Mass stayed 0); ``data.all_label_bugs=true`` reproduces both.

``data.honest_validation=true`` carves a patient-disjoint validation set (``data.val_fraction`` of the training
patients, seeded) out of train with ``shared.data.splits.patient_holdout``; model selection then uses it instead
of the test split (faithful default: the original selected on test).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torchvision import transforms as T

from shared.data import DataError
from shared.data.cache import find_caches
from shared.data.dataset import ImageDataset
from shared.data.images import check_frame_images
from shared.data.labels import CHEXPERT_COMPETITION, MIMIC_LABELS, NIH_LABELS
from shared.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform as shared_eval_transform

from .config import DataConfig

__all__ = ["ALL_LABELS", "NIH_TO_ALL", "LAYOUTS", "label_names", "check_layout", "build_frame", "make_dataset",
           "train_transform", "eval_transform", "selection_split", "all_union_labels"]

# The 21-class union of the ALL setting, in the original's order (with 'Mass' spelled right).
ALL_LABELS = [
    "Lung Opacity", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Emphysema",
    "Enlarged Cardiomediastinum", "Fibrosis", "Fracture", "Hernia", "Infiltration", "Lung Lesion", "Mass", "Nodule",
    "No Finding", "Pleural Thickening", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]
NIH_TO_ALL = {"Effusion": "Pleural Effusion", "Pleural_Thickening": "Pleural Thickening"}
CHEXPERT_UNCERTAIN = {"Edema": "ones", "Atelectasis": "ones"}      # U-Ones; every other label U-Zeros

# What each setting expects on disk (printed by errors and by reproduce.mk).
LAYOUTS = {
    "nih": "NIH ChestX-ray14 at data.nih_root: Data_Entry_2017[_v2020].csv, train_val_list.txt, test_list.txt, "
           "images/*.png (or Kaggle's images_0XX/images/*.png)",
    "mimic": "MIMIC-CXR-JPG 2.0.0 at data.mimic_root: mimic-cxr-2.0.0-{negbio,split,metadata}.csv[.gz], "
             "files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg, plus CheXclusion's testSet_SubjID.csv at "
             "data.chexclusion_test_subjects",
    "chexpert": "CheXpert-v1.0-small at data.chexpert_root: CheXpert-v1.0-small/{train,valid}.csv and the "
                "train/ valid/ image folders",
}
LAYOUTS["all"] = "all three: " + "; ".join(LAYOUTS[k] for k in ("nih", "mimic", "chexpert"))


def label_names(data: DataConfig) -> list[str]:
    return {"nih": list(NIH_LABELS), "mimic": list(MIMIC_LABELS), "chexpert": list(CHEXPERT_COMPETITION),
            "all": list(ALL_LABELS)}[data.dataset]


def _needed(data: DataConfig) -> list[str]:
    return ["nih", "mimic", "chexpert"] if data.dataset == "all" else [data.dataset]


def check_layout(data: DataConfig) -> None:
    """Fail early, naming the expected layout, when a dataset root (or the CheXclusion list) is absent."""
    roots = {"nih": data.nih_root, "mimic": data.mimic_root, "chexpert": data.chexpert_root}
    for name in _needed(data):
        root = Path(roots[name]).expanduser()
        if not root.is_dir():
            raise DataError(f"{name} data not found: {root} is not a directory. Expected {LAYOUTS[name]}")
        if name == "mimic" and not Path(data.chexclusion_test_subjects).expanduser().is_file():
            raise DataError(f"CheXclusion test-subject list not found: {data.chexclusion_test_subjects} "
                            f"(testSet_SubjID.csv from the CheXclusion repository; set "
                            f"data.chexclusion_test_subjects). Expected {LAYOUTS['mimic']}")


# ------------------------------------------------------------------------------------------------ readers
def _read_nih(data: DataConfig) -> pd.DataFrame:
    from shared.data import nih
    frame = nih.read_index(data.nih_root, no_finding="zero", on_missing=data.on_missing)
    unlisted = frame["split"] == "unlisted"
    if unlisted.any():   # neither official list: not part of the protocol (the reader warned with the count)
        frame = frame.loc[~unlisted].reset_index(drop=True)
    return frame


def _read_mimic(data: DataConfig) -> pd.DataFrame:
    from shared.data import mimic, splits
    subjects = splits.chexclusion_test_subjects(data.chexclusion_test_subjects)
    return mimic.read_index(data.mimic_root, labeler="negbio", uncertain="zeros", blank="zeros",
                            test_subjects=subjects, image_ext=data.mimic_image_ext, on_missing=data.on_missing)


def _read_chexpert(data: DataConfig, labels: Sequence[str] = CHEXPERT_COMPETITION) -> pd.DataFrame:
    from shared.data import chexpert
    kw = dict(labels=list(labels), frontal_only=True, uncertain=dict(CHEXPERT_UNCERTAIN), uncertain_default="zeros",
              blank="zeros", on_missing=data.on_missing)
    train = chexpert.read_index(data.chexpert_root, "train", **kw)
    test = chexpert.read_index(data.chexpert_root, "valid", **kw)
    test = test.assign(split="test")            # the official valid.csv is ADNet's test set
    return pd.concat([train, test], ignore_index=True)


def all_union_labels(frame: pd.DataFrame, source_labels: Sequence[str], rename: dict[str, str],
                     label_bugs: bool = False) -> pd.DataFrame:
    """Columns of ``ALL_LABELS`` from one dataset's label columns (missing classes 0, "No Finding" derived)."""
    out = pd.DataFrame(0.0, index=frame.index, columns=ALL_LABELS, dtype=np.float32)
    for lab in source_labels:
        if lab == "No Finding":
            continue
        target = rename.get(lab, lab)
        if target not in ALL_LABELS:
            raise DataError(f"ALL: label {lab!r} has no column in the 21-class union")
        if label_bugs and target == "Mass":
            continue                           # the original's 'Mas' column matched nothing
        out[target] = frame[lab].to_numpy(np.float32)
    findings = [c for c in ALL_LABELS if c not in ("No Finding", "Support Devices")]
    any_positive = (out[findings].to_numpy() > 0).any(axis=1)
    out["No Finding"] = (any_positive if label_bugs else ~any_positive).astype(np.float32)
    return out


def _read_all(data: DataConfig) -> pd.DataFrame:
    from shared.data.labels import CHEXPERT_LABELS
    parts = []
    for name, frame, labels, rename in (
            ("nih", _read_nih(data), NIH_LABELS, NIH_TO_ALL),
            ("mimic", _read_mimic(data), MIMIC_LABELS, {}),
            ("chexpert", _read_chexpert(data, CHEXPERT_LABELS), CHEXPERT_LABELS, {})):
        keep = frame[["path", "image_id", "patient_id", "split"]].copy()
        keep["source"] = name
        keep["patient_id"] = name + ":" + keep["patient_id"].astype(str)   # ids of different datasets may collide
        keep["image_id"] = name + ":" + keep["image_id"].astype(str)
        parts.append(pd.concat([keep, all_union_labels(frame, labels, rename, data.all_label_bugs)], axis=1))
    return pd.concat(parts, ignore_index=True)


def build_frame(data: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """The setting's index frame (split 'train' / 'test', plus 'val' when honest) and its label columns."""
    check_layout(data)
    reader = {"nih": _read_nih, "mimic": _read_mimic, "chexpert": _read_chexpert, "all": _read_all}[data.dataset]
    frame = check_frame_images(reader(data), data.verify_images, data.on_bad_image)
    labels = label_names(data)
    if data.honest_validation:
        from shared.data.splits import patient_holdout
        frame = patient_holdout(frame, data.val_fraction, data.val_seed)
    for split in ("train", "test"):
        if not (frame["split"] == split).any():
            raise DataError(f"{data.dataset}: no '{split}' images (check the split files under the data root)")
    frame = frame.reset_index(drop=True)
    is_mimic = frame["source"].eq("mimic") if "source" in frame else pd.Series(data.dataset == "mimic", frame.index)
    frame["squash"] = np.where(is_mimic, data.mimic_squash, 0)
    frame.attrs["label_columns"] = labels
    if data.use_cache:   # `prepare --cache` folders of the roots in use: read without decoding
        roots = {"nih": data.nih_root, "mimic": data.mimic_root, "chexpert": data.chexpert_root}
        frame.attrs["cache_roots"] = [str(roots[name]) for name in _needed(data)]
    return frame, labels


def selection_split(data: DataConfig) -> str:
    """The split that selects checkpoints / raw-vs-EMA / k-NN cells: 'val' when honest, else 'test' (faithful)."""
    return "val" if data.honest_validation else "test"


class SquashingDataset(ImageDataset):
    """Rows with ``squash`` = N > 0 are resized to N x N (aspect not kept) right after decoding, before the
    transforms: the original trained on MIMIC-CXR-JPG copies pre-squashed to 384 x 384 (a square copy made with
    ``python -m shared.data.prepare --mode square --size 384`` passes through unchanged)."""

    def __init__(self, frame: pd.DataFrame, labels: Sequence[str], transform, cache=None):
        super().__init__(frame, labels, transform=transform, cache=cache)
        self.squash = frame["squash"].to_numpy(np.int64)

    def load_array(self, index: int) -> np.ndarray:
        from shared.data.cache import resize_image
        arr = super().load_array(index)
        n = int(self.squash[index])
        return resize_image(arr, n, "square") if n else arr


def make_dataset(frame: pd.DataFrame, split: str, labels: Sequence[str], transform, limit: int = 0) -> ImageDataset:
    part = frame[frame["split"] == split].reset_index(drop=True)
    if limit:
        part = part.iloc[:limit].reset_index(drop=True)
    if part.empty:
        raise DataError(f"no images in split {split!r}")
    cache = find_caches(frame.attrs.get("cache_roots", []))
    if "squash" in part and part["squash"].any():
        return SquashingDataset(part, labels, transform, cache)
    return ImageDataset(part, labels, transform=transform, cache=cache)


# --------------------------------------------------------------------------------------------- transforms
def train_transform(data: DataConfig):
    """Spec order: (grayscale -> 3 ch by the dataset) -> hflip -> RandAugment (timm) -> RandomResizedCrop
    (bicubic) -> ToTensor -> ImageNet normalise -> RandomErasing (p, 1..re_count boxes, value 0). timm's pieces."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_pil_interp

    steps = []
    if data.hflip > 0:
        steps.append(T.RandomHorizontalFlip(data.hflip))
    if data.auto_augment:
        if not data.auto_augment.startswith("rand"):
            raise ValueError(f"data.auto_augment must be a timm RandAugment string ('rand-m9-mstd0.5'), "
                             f"got {data.auto_augment!r}")
        hparams = {}                          # timm's defaults, as the original passed none
        if data.auto_augment_hparams == "imagenet":
            hparams = dict(translate_const=int(data.train_size * 0.45),
                           img_mean=tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
                           interpolation=str_to_pil_interp(data.interpolation))
        steps.append(rand_augment_transform(data.auto_augment, hparams))
    steps += [RandomResizedCropAndInterpolation(data.train_size, scale=tuple(data.scale), ratio=tuple(data.ratio),
                                                interpolation=data.interpolation),
              T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if data.re_prob > 0:
        steps.append(RandomErasing(data.re_prob, mode="const", min_count=1, max_count=data.re_count, device="cpu"))
    return T.Compose(steps)


def eval_transform(data: DataConfig, size: int | None = None):
    """Resize the shorter side to floor(size / crop_pct) (bicubic), center crop ``size``, normalise."""
    return shared_eval_transform(size or data.test_size, crop_pct=data.crop_pct, interpolation=data.interpolation)


def ten_crop_transform(data: DataConfig, size: int | None = None):
    """Test-time ten-crop (spec section 4, optional): resize the shorter side to floor(size / crop_pct) as
    :func:`eval_transform` does, then torchvision's TenCrop(size) (4 corners + centre, and the same of the
    horizontally flipped image), each crop normalised -> a (10, 3, size, size) tensor per image."""
    from shared.data.transforms import interpolation_mode, resize_size
    size = size or data.test_size
    return T.Compose([T.Resize(resize_size(size, data.crop_pct), interpolation=interpolation_mode(data.interpolation)),
                      T.TenCrop(size), _StackNormalised()])


class _StackNormalised:
    """A tuple of PIL crops -> (n, 3, H, W), each ToTensor + ImageNet-normalised (a class: picklable for workers)."""

    def __init__(self):
        self.norm = T.Compose([T.ToTensor(), T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))])

    def __call__(self, crops) -> torch.Tensor:
        return torch.stack([self.norm(c) for c in crops])


def stack_labels(dataset: ImageDataset) -> torch.Tensor:
    return torch.from_numpy(np.asarray(dataset.labels))
