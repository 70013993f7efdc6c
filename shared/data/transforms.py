"""Normalisation constants and the small evaluation-transform builders every method shares.

Each method keeps its paper-specific *training* augmentation in its own package; what is common is here:

* ``IMAGENET_MEAN`` / ``IMAGENET_STD`` (torchvision/timm), ``HALF_MEAN`` / ``HALF_STD`` (0.5; HAM, HF Swin);
* ``eval_transform(size, crop_pct=None, interpolation="bicubic", mean, std, resize_mode="shorter")``:
  resize to ``floor(size / crop_pct)`` (timm's rule: 448 @ 0.95 -> 471, 416 -> 437, 256 -> 269) then center-crop
  ``size``, ToTensor, Normalize. ``crop_pct=None`` means 1 (resize straight to ``size``).
  ``resize_mode="shorter"`` resizes the shorter side keeping the aspect ratio (ADNet, CXR-CLIP);
  ``"squash"`` resizes to a square ignoring it (HAM's 512x512; AG-CNN's 256x256 then crop 224 =
  ``eval_transform(224, crop_pct=224/256, resize_mode="squash", interpolation="bilinear")``);
* ``to_tensor_normalize(mean, std)`` and ``denormalize(tensor, mean, std)`` (for pictures).

Every transform takes the ``PIL.Image`` RGB that ``shared.data.dataset.ImageDataset`` produces and returns a
float tensor (3, size, size).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "HALF_MEAN", "HALF_STD", "interpolation_mode", "resize_size",
           "eval_transform", "to_tensor_normalize", "denormalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

_MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
          "bicubic": InterpolationMode.BICUBIC, "lanczos": InterpolationMode.LANCZOS,
          "box": InterpolationMode.BOX, "hamming": InterpolationMode.HAMMING}


def interpolation_mode(name: str | InterpolationMode) -> InterpolationMode:
    """'bicubic' / 'bilinear' / 'nearest' / 'lanczos' / 'box' / 'hamming' -> torchvision InterpolationMode."""
    if isinstance(name, InterpolationMode):
        return name
    try:
        return _MODES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; use one of {sorted(_MODES)}") from None


def resize_size(size: int, crop_pct: float | None) -> int:
    """``floor(size / crop_pct)`` (timm's test-time rule); ``size`` itself when crop_pct is None."""
    if crop_pct is None:
        return int(size)
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return int(math.floor(size / crop_pct))


def to_tensor_normalize(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """PIL image -> float tensor in [0, 1] -> (x - mean) / std."""
    return T.Compose([T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])


def eval_transform(size: int, crop_pct: float | None = None, interpolation: str = "bicubic",
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   resize_mode: str = "shorter") -> T.Compose:
    """Deterministic test-time transform: resize (see module docstring) -> center crop ``size`` -> normalise."""
    mode = interpolation_mode(interpolation)
    scale = resize_size(size, crop_pct)
    if resize_mode == "shorter":
        resize = T.Resize(scale, interpolation=mode)
    elif resize_mode == "squash":
        resize = T.Resize((scale, scale), interpolation=mode)
    else:
        raise ValueError(f"resize_mode must be 'shorter' or 'squash', got {resize_mode!r}")
    return T.Compose([resize, T.CenterCrop(size), T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])


def denormalize(tensor: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Undo Normalize on a (3, H, W) or (B, 3, H, W) tensor; the result is clamped to [0, 1]."""
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return (tensor * s + m).clamp(0.0, 1.0)
