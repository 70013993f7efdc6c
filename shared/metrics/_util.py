"""Small input helpers shared by the metric modules (not public API)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def to_numpy(x, dtype=None) -> np.ndarray:
    """Torch tensor (any device, any dtype incl. bf16), list or array -> numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    return arr.astype(dtype, copy=False) if dtype is not None else arr


def as_2d(x, name: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, C), got shape {arr.shape}")
    return arr


def binary_labels(y, name: str = "y_true") -> np.ndarray:
    """Check that ``y`` holds only 0/1 (or bool) values and return it as bool."""
    arr = to_numpy(y)
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must contain only 0/1 values; found {bad.tolist()}")
    return arr.astype(bool)


def default_names(names: Sequence[str] | None, n: int, what: str = "class_names") -> list[str]:
    if names is None:
        return [f"class_{i}" for i in range(n)]
    names = [str(c) for c in names]
    if len(names) != n:
        raise ValueError(f"{what} has {len(names)} names but the data has {n} classes")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} has duplicate names: {names}")
    return names
