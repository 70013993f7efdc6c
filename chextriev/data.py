"""Datasets over a prepared directory (``chextriev.prepare``) and the frozen-CNN feature cache.

Every sample is ``{"x": tensor, "labels": (9,) float, "node_labels": (18, 9) float, "index": int}`` where ``x`` is

* ``crops``   (18, 3, S, S): each anatomy box cut from the original image as the original did (PIL crop, zero
  outside the image; antialiased resize to S x S, 224 in the paper; :func:`crop_boxes`), grayscale repeated to
  RGB, ImageNet-normalised, no augmentation (AnaXNet, V0-V6);
* ``image``   (3, S, S): the whole image resized (224 for the ResNet50 baseline, 256 for ATH);
* ``features`` (18, F) or (F,): the frozen CNN's output for those crops / that image, read from the feature cache.

Feature cache: the CNN is frozen (and in eval mode by default), so its output for a crop never changes; computing
it once per image replaces 18 ResNet50 forward passes per sample by a memory-mapped read. A cache directory holds
``features.npy`` (N x 18 x F, or N x F, float16 by default or float32, ``np.lib.format.open_memmap``), ``ids.csv``
(image_id per row) and ``meta.json`` (backbone, weights file, crop size, mode, count, dtype), written under a
temporary name and renamed, so a directory that exists is complete. The directory name (:func:`cache_key`) hashes
everything the stored values depend on: the CNN's weights, mode, size, dtype, the image ids and, for crops, the
anatomy boxes and the original image sizes they are rescaled by — a re-run of ``prepare`` with other boxes gets a
new cache, never stale crops. ``bn_drift=True`` (original behaviour) changes the CNN while training, so a cache is
refused then. float32 matters where the cached feature IS the retrieval embedding (the ResNet50 baseline): float16
rounding (~3 significant digits) reorders near-ties in the ranking.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from shared.progress import progress

from shared.data.images import load_image
from shared.data.labels import IMAGENOME_FINDINGS

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
Mode = Literal["crops", "image"]


def _normalise(gray: np.ndarray) -> np.ndarray:
    """(H, W) pixels in 0..255 -> (3, H, W) float32 ImageNet-normalised (gray repeated to RGB)."""
    x = gray.astype(np.float32)[None] / 255.0
    return ((np.repeat(x, 3, 0) - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


def crop_boxes(image: np.ndarray, boxes_xywh: np.ndarray, size: int, scale: tuple[float, float] = (1.0, 1.0)
               ) -> np.ndarray:
    """The original's anatomy crops: each [x, y, w, h] box (original pixels, times ``scale`` = (sx, sy) for a
    resized JPEG) cut from ``image`` (H, W) uint8 with PIL's ``crop((x, y, x + w, y + h))`` -- corners rounded,
    boxes NOT clipped: the part outside the image is zero -- then resized to size x size with torchvision's
    ``resize(antialias=True)`` (bilinear) -> (n, size, size) float32 in 0..255 (not re-quantised to uint8)."""
    from PIL import Image
    from torchvision.transforms.functional import resize

    pil = Image.fromarray(image)
    sx, sy = scale
    out = np.empty((len(boxes_xywh), size, size), dtype=np.float32)
    for i, (x, y, bw, bh) in enumerate(np.asarray(boxes_xywh, dtype=np.float64)):
        box = (x * sx, y * sy, (x + bw) * sx, (y + bh) * sy)
        try:
            patch = np.asarray(pil.crop(box), dtype=np.float32)
        except ValueError as err:               # PIL: right < left or lower < upper
            raise ValueError(f"box {i} [x, y, w, h] = {[x, y, bw, bh]}: {err}") from None
        if patch.size == 0:
            raise ValueError(f"box {i} [x, y, w, h] = {[x, y, bw, bh]} has no area after rounding to pixels")
        out[i] = resize(torch.from_numpy(patch)[None], [size, size], antialias=True)[0].numpy()
    return out


class AnatomyDataset(Dataset):
    """Images of ``frame`` (a prepared index, rows = ``rows``) as anatomy crops or whole images (see module doc)."""

    def __init__(self, frame: pd.DataFrame, boxes: np.ndarray, labels: np.ndarray, rows: Sequence[int],
                 mode: Mode = "crops", size: int = 224):
        if mode not in ("crops", "image"):
            raise ValueError(f"mode must be crops or image, got {mode!r}")
        self.frame, self.boxes, self.node_labels = frame, boxes, labels
        self.rows = np.asarray(rows, dtype=np.int64)
        self.mode, self.size = mode, int(size)

    def __len__(self) -> int:
        return len(self.rows)

    def image_id(self, i: int) -> str:
        return str(self.frame["image_id"].iloc[self.rows[i]])

    def pixels(self, i: int) -> np.ndarray:
        """Crops (18, S, S) float32 (:func:`crop_boxes`) or the resized image (S, S) uint8, both 0..255."""
        r = self.rows[i]
        row = self.frame.iloc[r]
        img = load_image(row["path"])
        if self.mode == "image":
            return cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        scale = (1.0, 1.0)
        cols, rws = row.get("columns"), row.get("rows")
        if pd.notna(cols) and pd.notna(rws) and float(cols) > 0 and float(rws) > 0:
            scale = (img.shape[1] / float(cols), img.shape[0] / float(rws))   # JPEG resized vs the original
        try:
            return crop_boxes(img, self.boxes[r], self.size, scale)
        except ValueError as err:
            raise ValueError(f"image {row['image_id']} ({row['path']}): {err}; fix its boxes in boxes.npy or drop "
                             "the image") from None

    def __getitem__(self, i: int) -> dict:
        r = self.rows[i]
        px = self.pixels(i)
        x = _normalise(px) if px.ndim == 2 else np.stack([_normalise(c) for c in px])
        node = self.node_labels[r].astype(np.float32)
        return {"x": torch.from_numpy(x), "labels": torch.from_numpy(node.max(0)),
                "node_labels": torch.from_numpy(node), "index": int(i)}


# ------------------------------------------------------------------------------------------ feature cache
class FeatureCache:
    """A built feature cache (see the module doc): ``cache[image_id] -> np.ndarray`` (float16 or float32)."""

    def __init__(self, directory: str | os.PathLike):
        d = Path(directory)
        if not (d / "meta.json").exists():
            raise FileNotFoundError(f"feature cache not found or incomplete: {d}")
        self.dir = d
        self.meta = json.loads((d / "meta.json").read_text())
        ids = pd.read_csv(d / "ids.csv", dtype={"image_id": str})["image_id"].tolist()
        self.slot = {k: i for i, k in enumerate(ids)}
        self._data = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:           # opened lazily: one map per process (DataLoader workers)
            self._data = np.load(self.dir / "features.npy", mmap_mode="r")
        return self._data

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.slot)

    def __contains__(self, image_id) -> bool:
        return image_id in self.slot

    def __getitem__(self, image_id: str) -> np.ndarray:
        try:
            return self.data[self.slot[image_id]]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the feature cache {self.dir}; delete the cache to "
                           "rebuild it") from None


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha1 of every parameter and buffer of ``module`` (names, shapes, bytes): the CNN a cache was built with."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


CACHE_DTYPES = {"float16": np.float16, "float32": np.float32}


def geometry_fingerprint(boxes: np.ndarray, original_sizes: Optional[np.ndarray] = None) -> str:
    """sha1 of the crop geometry: the (N, 18, 4) boxes (as float64) and, when given, the (N, 2) original
    columns/rows the boxes are rescaled by (NaN where unknown)."""
    h = hashlib.sha1()
    b = np.ascontiguousarray(np.asarray(boxes, dtype=np.float64))
    h.update(repr(b.shape).encode())
    h.update(b.tobytes())
    if original_sizes is not None:
        o = np.ascontiguousarray(np.asarray(original_sizes, dtype=np.float64))
        h.update(repr(o.shape).encode())
        h.update(o.tobytes())
    return h.hexdigest()


def original_sizes(frame: pd.DataFrame) -> Optional[np.ndarray]:
    """(N, 2) original columns, rows of ``frame`` (what crop boxes are rescaled by), or None without them."""
    if "columns" not in frame.columns or "rows" not in frame.columns:
        return None
    return frame[["columns", "rows"]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def cache_key(backbone: str, cnn: torch.nn.Module, mode: str, size: int, image_ids: Sequence[str],
              boxes: Optional[np.ndarray] = None, dtype: str = "float16",
              sizes: Optional[np.ndarray] = None) -> str:
    """Cache directory name: the backbone, the exact CNN weights (so a random-init CNN of another seed or other
    weights never reuse a cache), the input mode and size, the stored dtype, the image ids and, in crops mode, the
    crop geometry (``boxes`` (N, 18, 4) and the original image ``sizes`` (N, 2) they are rescaled by; see
    :func:`geometry_fingerprint`), so changed boxes never reuse stale crops."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
    if mode == "crops" and boxes is None:
        raise ValueError("cache_key: crops mode needs the boxes (they define the crops)")
    geometry = geometry_fingerprint(boxes, sizes) if mode == "crops" else None
    h = hashlib.sha1()
    h.update(json.dumps([backbone, weights_fingerprint(cnn), mode, int(size), dtype, geometry]).encode())
    h.update("\n".join(image_ids).encode())
    return f"{backbone}_{mode}{size}_{'f16' if dtype == 'float16' else 'f32'}_{h.hexdigest()[:12]}"


@torch.no_grad()
def build_feature_cache(cnn: torch.nn.Module, dataset: AnatomyDataset, out_dir: str | os.PathLike,
                        batch_size: int = 16, num_workers: int = 0, device: str | torch.device = "cpu",
                        meta: Optional[dict] = None, dtype: str = "float16") -> FeatureCache:
    """Run the frozen ``cnn`` (eval mode; ``cnn(images (B,3,S,S)) -> (B,F)``) once over ``dataset`` and write a
    ``dtype`` ("float16" or "float32") cache to ``out_dir`` (no-op when it already exists; the dtype is part of
    :func:`cache_key`). Progress bar; atomic (temp dir + rename)."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
    np_dtype = CACHE_DTYPES[dtype]
    out_dir = Path(out_dir)
    if (out_dir / "meta.json").exists():
        return FeatureCache(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    was_training = cnn.training
    cnn.eval().to(device)
    n = len(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    store = None
    pos = 0
    for batch in progress(loader, desc=f"feature cache ({n} images)", unit="batch"):
        x = batch["x"].to(device)
        if x.dim() == 5:
            b, k = x.shape[:2]
            feats = cnn(x.flatten(0, 1)).view(b, k, -1)
        else:
            feats = cnn(x)
        if store is None:
            store = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np_dtype,
                                              shape=(n, *feats.shape[1:]))
        store[pos:pos + len(feats)] = feats.float().cpu().numpy().astype(np_dtype)
        pos += len(feats)
    if store is None:
        raise ValueError("cannot build a feature cache of an empty dataset")
    store.flush()
    del store
    pd.DataFrame({"image_id": [dataset.image_id(i) for i in range(n)]}).to_csv(tmp / "ids.csv", index=False)
    (tmp / "meta.json").write_text(json.dumps({**(meta or {}), "count": n, "mode": dataset.mode,
                                               "size": dataset.size, "dtype": dtype}, indent=1))
    cnn.train(was_training)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return FeatureCache(out_dir)


class CachedDataset(Dataset):
    """Same samples as :class:`AnatomyDataset` with ``x`` = cached CNN features (as float32)."""

    def __init__(self, base: AnatomyDataset, cache: FeatureCache):
        self.base, self.cache = base, cache
        missing = [base.image_id(i) for i in range(len(base)) if base.image_id(i) not in cache]
        if missing:
            raise KeyError(f"{len(missing)} images (e.g. {missing[0]}) are not in the feature cache {cache.dir}")

    def __len__(self) -> int:
        return len(self.base)

    def image_id(self, i: int) -> str:
        return self.base.image_id(i)

    def __getitem__(self, i: int) -> dict:
        r = self.base.rows[i]
        node = self.base.node_labels[r].astype(np.float32)
        x = np.array(self.cache[self.base.image_id(i)], dtype=np.float32)   # a copy: the memmap is read-only
        return {"x": torch.from_numpy(x), "labels": torch.from_numpy(node.max(0)),
                "node_labels": torch.from_numpy(node), "index": int(i)}


def label_matrix(labels: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), 9) image labels = OR over anatomies."""
    return np.asarray(labels)[np.asarray(rows)].any(1).astype(np.int64)


__all__ = ["AnatomyDataset", "CachedDataset", "FeatureCache", "build_feature_cache", "cache_key", "crop_boxes",
           "geometry_fingerprint", "original_sizes", "CACHE_DTYPES",
           "label_matrix", "IMAGENOME_FINDINGS"]
