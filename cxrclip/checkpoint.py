"""Load the authors' released CXR-CLIP checkpoints (r50_{m,mc,mcc}.tar, swint_{m,mc,mcc}.tar) into our model.

The released files are dicts {model, optimizer, scheduler, config, epoch, train_loss}; their model keys use the
original module names, mapped here explicitly to ours:

    image_encoder.resnet.*            -> image_encoder.resnet.*   (torchvision ResNet-50, no fc)
    image_encoder.image_encoder.*     -> image_encoder.swin.*     (HF Swin-T)
    text_encoder.text_encoder.*       -> text_encoder.bert.*      (HF BERT)
    image_projection.projection.*     -> image_projection.*
    text_projection.projection.*      -> text_projection.*
    logit_scale                       -> logit_scale

Their ``config`` entry is a pickled object, which ``torch.load(weights_only=True)`` refuses; loading such a file
needs the explicit ``trust_pickle=True`` (``--trust-checkpoint`` on the command line) — only for files you trust.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ORIGINAL_PREFIXES = {
    "image_encoder.image_encoder.": "image_encoder.swin.",
    "text_encoder.text_encoder.": "text_encoder.bert.",
    "image_projection.projection.": "image_projection.",
    "text_projection.projection.": "text_projection.",
}
# Buffers older transformers versions saved that current ones recompute.
IGNORED_SUFFIXES = ("embeddings.position_ids",)


def from_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original keys to ours (keys already in our naming pass through unchanged)."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.endswith(IGNORED_SUFFIXES):
            continue
        for old, new in ORIGINAL_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the original's (for round-trip tests and for sharing weights with the original code)."""
    inverse = {new: old for old, new in ORIGINAL_PREFIXES.items()}
    out = {}
    for key, value in state_dict.items():
        for new, old in inverse.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key] = value
    return out


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a released (or our own) checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001 - torch raises several types for refused pickles
        if trust_pickle:
            raise
        raise RuntimeError(f"{path}: refused by weights_only loading ({type(err).__name__}). Released CXR-CLIP "
                           "checkpoints pickle their config; if you trust the file, pass --trust-checkpoint "
                           "(trust_pickle=True).") from err
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return obj


def load_weights(model: nn.Module, path: str | Path, trust_pickle: bool = False, image_only: bool = False) -> None:
    """Load a checkpoint into ``model``; every missing or unexpected key is named in the error."""
    state = from_original(read_checkpoint(path, trust_pickle))
    if image_only:
        state = {k: v for k, v in state.items() if k.startswith(("image_encoder.", "image_projection."))}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not image_only or k.startswith(("image_encoder.", "image_projection."))]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{path} does not fit the model: missing keys {missing[:20]}"
                           f"{' ...' if len(missing) > 20 else ''}; unexpected keys {result.unexpected_keys[:20]}"
                           f"{' ...' if len(result.unexpected_keys) > 20 else ''}")
