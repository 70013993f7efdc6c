"""Weakly-supervised localization metrics, HAM protocol (streaming).

    gt = boxes_to_mask([[x, y, w, h], ...], 1024, 1024, out_size=(512, 512))   # bool (512, 512)
    meter = LocalizationMeter(class_names)
    for ...:                                        # per image (or batch) and class with a GT box
        meter.update(c, refined[:, c] >= 0.999, gt_masks)   # torch or numpy, (H, W) or (B, H, W)
    t_iou, t_iobb = meter.tables()                  # per-class rows + "mean"

Boxes -> mask (HAM): at the ORIGINAL resolution, a box (x, y, w, h) fills rows floor(y):floor(y+h) and columns
floor(x):floor(x+w) (clipped to the image; HAM relied on numpy slicing, which would wrap a negative start — we
clip at 0); the boxes of one class are OR-ed. ``scale`` multiplies the box coordinates first (boxes given in
1024-px coordinates for an image stored at 512 px: ``scale=0.5``). ``out_size=(H', W')`` then resizes the mask
with NEAREST exactly as PIL does (pixel i samples about floor((i + 0.5) * H / H'); Pillow's own sampling), as HAM's
masks are resized together with the image (PIL ``Image.resize(..., NEAREST)``; torch's "nearest-exact").
``nearest="floor"`` samples floor(i * H / H') instead (cv2 INTER_NEAREST, torch "nearest").

Per (image, class) pair: IoU = |P & G| / max(|P | G|, 1); IoBB = |P & G| / max(|P|, 1) (HAM's IoBB/IoR: the
fraction of the predicted region inside the box). T(IoU)[c][t] = fraction of class-c pairs with IoU >= t,
t in 0.1..0.7; T(IoBB) with t in {0.1, 0.25, 0.5, 0.75, 0.9}. A class with no pair is NaN and excluded from the
mean row (``df.attrs["excluded"]``). The meter keeps two float64 numbers per pair, never the masks.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ._util import default_names, to_numpy

__all__ = ["boxes_to_mask", "resize_mask_nearest", "iou_iobb", "LocalizationMeter",
           "IOU_THRESHOLDS", "IOBB_THRESHOLDS", "MEAN_ROW"]

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
MEAN_ROW = "mean"


def _nearest_index(n_in: int, n_out: int, nearest: str) -> np.ndarray:
    if nearest == "pil":   # ask Pillow itself: its fixed-point sampling differs from (i + 0.5) * ratio at some ratios
        ramp = Image.fromarray(np.arange(n_in, dtype=np.int32)[None, :])          # mode "I"
        return np.asarray(ramp.resize((n_out, 1), Image.Resampling.NEAREST))[0].astype(np.int64)
    if nearest == "floor":
        src = np.floor(np.arange(n_out, dtype=np.float64) * (n_in / n_out))
    else:
        raise ValueError(f"nearest must be 'pil' or 'floor', got {nearest!r}")
    return np.clip(src, 0, n_in - 1).astype(np.int64)


def resize_mask_nearest(mask, out_size: tuple[int, int], nearest: str = "pil") -> np.ndarray:
    """Resize a (H, W) mask to ``out_size`` = (H', W') with nearest-neighbour sampling (see module doc)."""
    m = to_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    rows = _nearest_index(m.shape[0], int(out_size[0]), nearest)
    cols = _nearest_index(m.shape[1], int(out_size[1]), nearest)
    return m[rows[:, None], cols[None, :]]


def boxes_to_mask(boxes_xywh, height: int, width: int, scale: float = 1.0,
                  out_size: tuple[int, int] | None = None, nearest: str = "pil") -> np.ndarray:
    """Bool mask (height, width) — or (out_size) — that is True inside any of the boxes (HAM's rule).

    ``boxes_xywh``: (x, y, w, h) or a sequence of them, in pixels of the original image (times ``scale``).
    An empty sequence gives an all-False mask.
    """
    b = np.asarray(to_numpy(boxes_xywh), dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim == 1:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (x, y, w, h) or (K, 4), got shape {b.shape}")
    if not np.isfinite(b).all() or (b[:, 2:] < 0).any():
        raise ValueError(f"boxes must be finite with non-negative width/height, got {b.tolist()}")
    height, width = int(height), int(width)
    b = b * float(scale)
    if out_size is None:
        rows, cols = np.arange(height), np.arange(width)
    else:
        rows = _nearest_index(height, int(out_size[0]), nearest)
        cols = _nearest_index(width, int(out_size[1]), nearest)
    mask = np.zeros((rows.size, cols.size), dtype=bool)
    for x, y, w, h in b:
        r0, r1 = max(math.floor(y), 0), min(math.floor(y + h), height)
        c0, c1 = max(math.floor(x), 0), min(math.floor(x + w), width)
        if r1 <= r0 or c1 <= c0:
            continue
        rin = (rows >= r0) & (rows < r1)
        cin = (cols >= c0) & (cols < c1)
        mask |= rin[:, None] & cin[None, :]
    return mask


def _as_bool(m, threshold, name):
    """numpy or torch mask -> bool of the same library; thresholded when ``threshold`` is given."""
    is_torch = hasattr(m, "detach") and hasattr(m, "cpu")
    if not is_torch:
        m = np.asarray(m)
    if threshold is not None:
        return m >= threshold
    if str(m.dtype) in ("bool", "torch.bool"):
        return m
    ok = ((m == 0) | (m == 1)).all()
    if not bool(ok):
        raise ValueError(f"{name} must be a bool or 0/1 mask (pass pred_threshold= to threshold scores)")
    return m != 0


def iou_iobb(pred_mask, gt_mask, pred_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IoU and IoBB per pair for (H, W) or (B, H, W) masks (numpy or torch); returns float64 arrays (B,)."""
    p = _as_bool(pred_mask, pred_threshold, "pred_mask")
    g = _as_bool(gt_mask, None, "gt_mask")
    p_torch, g_torch = hasattr(p, "cpu"), hasattr(g, "cpu")
    if p_torch != g_torch:                       # one torch, one numpy: compute in torch on its device
        import torch
        if p_torch:
            g = torch.as_tensor(g, device=p.device)
        else:
            p = torch.as_tensor(p, device=g.device)
    if tuple(p.shape) != tuple(g.shape):
        raise ValueError(f"pred_mask {tuple(p.shape)} and gt_mask {tuple(g.shape)} must have the same shape")
    if p.ndim == 2:
        p, g = p[None], g[None]
    if p.ndim != 3:
        raise ValueError(f"masks must be (H, W) or (B, H, W), got shape {tuple(p.shape)}")
    inter = (p & g).reshape(p.shape[0], -1).sum(1)
    union = (p | g).reshape(p.shape[0], -1).sum(1)
    psum = p.reshape(p.shape[0], -1).sum(1)
    inter, union, psum = (to_numpy(t).astype(np.float64) for t in (inter, union, psum))
    return inter / np.maximum(union, 1.0), inter / np.maximum(psum, 1.0)


class LocalizationMeter:
    """Streaming T(IoU) / T(IoBB) per class. Memory grows by two floats per (image, class) pair."""

    def __init__(self, class_names: Sequence[str], iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                 iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS, pred_threshold: float | None = None):
        self.class_names = default_names(class_names, len(class_names))
        if MEAN_ROW in self.class_names:
            raise ValueError(f"a class may not be named {MEAN_ROW!r}")
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.iobb_thresholds = tuple(float(t) for t in iobb_thresholds)
        self.pred_threshold = pred_threshold
        self._iou: list[list[np.ndarray]] = [[] for _ in self.class_names]
        self._iobb: list[list[np.ndarray]] = [[] for _ in self.class_names]

    def update(self, class_index, pred_mask, gt_mask) -> tuple[np.ndarray, np.ndarray]:
        """Add pairs. ``class_index``: int, or (B,) ints for batched (B, H, W) masks. Returns (iou, iobb)."""
        iou, iobb = iou_iobb(pred_mask, gt_mask, self.pred_threshold)
        cls = np.asarray(to_numpy(class_index)).reshape(-1).astype(np.int64)
        if cls.size == 1:
            cls = np.full(iou.shape[0], cls[0])
        if cls.shape[0] != iou.shape[0]:
            raise ValueError(f"class_index has {cls.shape[0]} entries for {iou.shape[0]} masks")
        if cls.size and (cls.min() < 0 or cls.max() >= len(self.class_names)):
            raise ValueError(f"class_index out of range 0..{len(self.class_names) - 1}: {cls.tolist()}")
        for c in np.unique(cls):
            sel = cls == c
            self._iou[c].append(iou[sel])
            self._iobb[c].append(iobb[sel])
        return iou, iobb

    def merge(self, other: "LocalizationMeter") -> "LocalizationMeter":
        """Add another meter's pairs (e.g. from another process)."""
        if other.class_names != self.class_names:
            raise ValueError("cannot merge meters with different class names")
        for c in range(len(self.class_names)):
            self._iou[c].extend(other._iou[c])
            self._iobb[c].extend(other._iobb[c])
        return self

    def values(self, class_index: int) -> tuple[np.ndarray, np.ndarray]:
        """All (iou, iobb) values recorded for one class."""
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
        return cat(self._iou[class_index]), cat(self._iobb[class_index])

    def counts(self) -> np.ndarray:
        return np.array([sum(a.size for a in xs) for xs in self._iou], dtype=np.int64)

    def _table(self, which: int, thresholds) -> pd.DataFrame:
        rows = []
        for c in range(len(self.class_names)):
            v = self.values(c)[which]
            rows.append([(v >= t).mean() if v.size else np.nan for t in thresholds])
        df = pd.DataFrame(rows, index=pd.Index(self.class_names, name="class"),
                          columns=[f"{t:g}" for t in thresholds], dtype=np.float64)
        n = self.counts()
        df.loc[MEAN_ROW] = df[n > 0].mean(axis=0) if (n > 0).any() else np.nan
        df.attrs["excluded"] = [c for c, k in zip(self.class_names, n) if k == 0]
        df.attrs["n_pairs"] = dict(zip(self.class_names, n.tolist()))
        df.attrs["metric"] = "T(IoU)" if which == 0 else "T(IoBB)"
        return df

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(T(IoU), T(IoBB)) DataFrames: rows = classes + "mean", columns = thresholds as strings ("0.1")."""
        return self._table(0, self.iou_thresholds), self._table(1, self.iobb_thresholds)
