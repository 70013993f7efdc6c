"""AG-CNN data: NIH ChestX-ray14 on the CheXNet 70/10/20 split (the paper's) or the official split with a
patient-disjoint validation carve-out; the paper's transforms.

Label columns are in the paper's (Wang) order; with C = 15 a 15th column "No Finding" (1 when none of the 14
findings is present) is appended. Images listed by the split but absent under the root are never dropped silently:
``on_missing="error"`` raises naming them, ``"warn"`` warns and the count is kept in ``frame.attrs["missing"]``
(test.py writes it into results.json).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from torchvision import transforms as T

from shared.data import nih, splits
from shared.data.cache import find_caches
from shared.data.dataset import ImageDataset
from shared.data.images import check_frame_images
from shared.data.labels import NIH_NO_FINDING, NIH_WANG_ORDER
from shared.data.transforms import IMAGENET_MEAN, IMAGENET_STD, interpolation_mode

from agcnn.config import Config, DataConfig


def label_columns(num_classes: int) -> list[str]:
    if num_classes == 14:
        return list(NIH_WANG_ORDER)
    if num_classes == 15:
        return list(NIH_WANG_ORDER) + [NIH_NO_FINDING]
    raise ValueError(f"model.num_classes must be 14 or 15 (with No Finding), got {num_classes}")


def build_frame(cfg: DataConfig, num_classes: int) -> pd.DataFrame:
    """Index of every image with columns path, image_id, patient_id, split (train/val/test) and the labels."""
    columns = label_columns(num_classes)
    missing_ids: list[str] = []
    if cfg.split == "chexnet":
        lists = splits.chexnet_lists(cfg.split_root)
        index = nih.read_index(cfg.root, check_files=False)
        found = nih.find_images(cfg.root)
        unknown = lists[~lists["image_id"].isin(index["image_id"])]
        if len(unknown):
            raise ValueError(f"{len(unknown)} image(s) of the CheXNet lists are not in the NIH label table under "
                             f"{cfg.root}, e.g. {unknown['image_id'].head(3).tolist()}")
        meta = index.set_index("image_id").loc[lists["image_id"], ["path", "patient_id"]].reset_index()
        frame = pd.concat([meta, lists.drop(columns=["image_id"]).reset_index(drop=True)], axis=1)
        present = frame["image_id"].isin(found.keys()).to_numpy()
        missing_ids = frame.loc[~present, "image_id"].tolist()
        # the CheXNet lists carry the labels the split was made with (Wang order); keep them
    else:
        frame = nih.read_index(cfg.root, check_files=False)
        if (frame["split"] == "unlisted").all():
            official = splits.nih_official()
            frame = splits.assign_split(frame, official)
        frame = splits.patient_holdout(frame, cfg.val_fraction, cfg.split_seed)
        frame = frame[frame["split"].isin(["train", "val", "test"])].reset_index(drop=True)
        found = nih.find_images(cfg.root)
        present = frame["image_id"].isin(found.keys()).to_numpy()
        missing_ids = frame.loc[~present, "image_id"].tolist()
    if missing_ids:
        msg = (f"{len(missing_ids)} of {len(frame)} images of the {cfg.split} split are missing under "
               f"{cfg.root}/images (or images_*/images), e.g. {missing_ids[:5]}")
        if cfg.on_missing == "error":
            raise FileNotFoundError(msg + "; set data.on_missing=warn to skip them (they are counted in results)")
        warnings.warn(msg + "; skipped", stacklevel=2)
        frame = frame[present].reset_index(drop=True)
    frame = check_frame_images(frame, cfg.verify_images, cfg.on_bad_image)
    if NIH_NO_FINDING in columns:
        frame[NIH_NO_FINDING] = (frame[list(NIH_WANG_ORDER)].sum(axis=1) == 0).astype(np.float32)
    frame.attrs["label_columns"] = columns
    frame.attrs["missing"] = len(missing_ids)
    frame.attrs["missing_examples"] = missing_ids[:20]
    return frame


def train_transform(cfg: DataConfig) -> T.Compose:
    interp = interpolation_mode(cfg.interpolation)
    steps = [T.Resize((cfg.resize, cfg.resize), interpolation=interp),
             T.RandomResizedCrop(cfg.image_size, scale=tuple(cfg.rrc_scale), interpolation=interp)]
    if cfg.hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(cfg: DataConfig) -> T.Compose:
    interp = interpolation_mode(cfg.interpolation)
    return T.Compose([T.Resize((cfg.resize, cfg.resize), interpolation=interp), T.CenterCrop(cfg.image_size),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def datasets(cfg: Config, frame: pd.DataFrame | None = None) -> dict[str, ImageDataset]:
    frame = build_frame(cfg.data, cfg.model.num_classes) if frame is None else frame
    cols = frame.attrs["label_columns"]
    cache = find_caches([cfg.data.root]) if cfg.data.use_cache else None   # `prepare --cache`: no decoding
    out = {}
    for split in ("train", "val", "test"):
        part = frame[frame["split"] == split].reset_index(drop=True)
        if not len(part):
            raise ValueError(f"split {split!r} is empty ({cfg.data.split} split of {cfg.data.root})")
        tf = train_transform(cfg.data) if split == "train" else eval_transform(cfg.data)
        out[split] = ImageDataset(part, cols, transform=tf, cache=cache)
        out[split].frame = part
    return out
