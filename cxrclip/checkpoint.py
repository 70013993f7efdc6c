"""Load the authors' released CXR-CLIP checkpoints (r50_{m,mc,mcc}.tar, swint_{m,mc,mcc}.tar) into our model.

The released files are dicts {model, optimizer, scheduler, config, epoch, train_loss}; their model keys use the
original module names, mapped here explicitly to ours:

    image_encoder.resnet.*            -> image_encoder.resnet.*   (torchvision ResNet-50, no fc)
    image_encoder.image_encoder.*     -> image_encoder.swin.*     (HF Swin-T)
    text_encoder.text_encoder.*       -> text_encoder.bert.*      (HF BERT)
    image_projection.projection.*     -> image_projection.*
    text_projection.projection.*      -> text_projection.*
    logit_scale                       -> logit_scale

Inside the HF encoders, the released files use transformers-4.x names (the authors trained with 4.x). transformers
5 renamed Swin's (BERT's are unchanged), so a second, explicit map renames them — only for keys the model being
loaded does not have, so the same file loads on a 4.x and on a 5.x install:

    Swin (per block: encoder.layers.L.blocks.B.)          transformers 4.x -> 5.x
    attention.self.query / key / value                    attention.q_proj / k_proj / v_proj
    attention.self.relative_position_bias_table           attention.relative_position_bias.relative_position_bias_table
    attention.output.dense                                attention.o_proj
    intermediate.dense / output.dense                     mlp.fc1 / mlp.fc2

Buffers that 4.x saved and current versions recompute from the config (not weights) are dropped when the model
has no such entry: Swin's ``relative_position_index``, BERT's ``embeddings.position_ids`` / ``token_type_ids``.

Their ``config`` entry is a pickled object, which ``torch.load(weights_only=True)`` refuses; loading such a file
needs the explicit ``trust_pickle=True`` (``--trust-checkpoint`` on the command line) — only for files you trust.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Collection

import torch
from torch import nn

from shared.engine.checkpoint import CheckpointError, load_failure

ORIGINAL_PREFIXES = {
    "image_encoder.image_encoder.": "image_encoder.swin.",
    "text_encoder.text_encoder.": "text_encoder.bert.",
    "image_projection.projection.": "image_projection.",
    "text_projection.projection.": "text_projection.",
}
_BLOCK = r"(image_encoder\.swin\.encoder\.layers\.\d+\.blocks\.\d+\.)"
# transformers 4.x Swin names -> 5.x (the released Swin-T checkpoints use the former), within one block.
SWIN_RENAMES = (
    ("attention.self.query", "attention.q_proj"),
    ("attention.self.key", "attention.k_proj"),
    ("attention.self.value", "attention.v_proj"),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def _rules(pairs):
    return [(re.compile(_BLOCK + re.escape(src) + r"(?=\.|$)"), r"\g<1>" + dst) for src, dst in pairs]


SWIN_V4_TO_V5 = _rules(SWIN_RENAMES)
SWIN_V5_TO_V4 = _rules([(new, old) for old, new in SWIN_RENAMES])
# Buffers older transformers versions saved that current ones recompute from the config.
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids", "relative_position_index")


def _rename_swin(key: str, rules) -> str:
    for pattern, replacement in rules:
        new, count = pattern.subn(replacement, key, count=1)
        if count:
            return new
    return key


def from_original(state_dict: dict[str, torch.Tensor],
                  target_keys: Collection[str] | None = None) -> dict[str, torch.Tensor]:
    """Rename original keys to ours (keys already in our naming pass through unchanged).

    ``target_keys``: the state-dict keys of the model to load into. A transformers-4.x Swin key the model lacks is
    renamed to its 5.x name, and a recomputed buffer the model lacks is dropped; without ``target_keys``, the
    installed transformers' names are assumed.
    """
    target = set(target_keys) if target_keys is not None else None
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        for old, new in ORIGINAL_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if target is not None and key in target:
            out[key] = value
            continue
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if key.startswith("image_encoder.swin."):
            renamed = _rename_swin(key, SWIN_V4_TO_V5)
            if target is None or renamed in target:
                key = renamed
        out[key] = value
    return out


def _relative_position_index(window: int) -> torch.Tensor:
    """The (window^2, window^2) index into a Swin relative-position bias table, as transformers 4.x saved it."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]


def to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the original's, with Swin in transformers-4.x names plus the ``relative_position_index`` buffers
    4.x saved (the layout of the released files; for sharing weights with the original code, and for tests)."""
    inverse = {new: old for old, new in ORIGINAL_PREFIXES.items()}

    def original_prefix(key: str) -> str:
        for new, old in inverse.items():
            if key.startswith(new):
                return old + key[len(new):]
        return key

    out = {}
    for key, value in state_dict.items():
        if key.startswith("image_encoder.swin."):
            key = _rename_swin(key, SWIN_V5_TO_V4)
            if key.endswith("attention.self.relative_position_bias_table"):
                window = (round(value.shape[0] ** 0.5) + 1) // 2  # the table has (2 window - 1)^2 rows
                index_key = key.replace("relative_position_bias_table", "relative_position_index")
                out[original_prefix(index_key)] = _relative_position_index(window)
        out[original_prefix(key)] = value
    return out

def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a released (or our own) checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; check --weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001 - torch raises several types for refused pickles and broken files
        raise CheckpointError(load_failure(path, err, trust_hint="released CXR-CLIP checkpoints pickle their "
                                           "config: if you trust the file, pass --trust-checkpoint")) from err
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no model state dict (a dict of tensors, or one under 'model'); "
                              "give a CXR-CLIP checkpoint (--weights) or use --run RUN_DIR")
    return obj


def load_weights(model: nn.Module, path: str | Path, trust_pickle: bool = False, image_only: bool = False) -> None:
    """Load a checkpoint into ``model``; every missing or unexpected key is named in the error."""
    state = from_original(read_checkpoint(path, trust_pickle), model.state_dict().keys())
    if image_only:
        state = {k: v for k, v in state.items() if k.startswith(("image_encoder.", "image_projection."))}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys
               if not image_only or k.startswith(("image_encoder.", "image_projection."))]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path} does not fit the model: missing keys {missing[:20]}"
                           f"{' ...' if len(missing) > 20 else ''}; unexpected keys {result.unexpected_keys[:20]}"
                           f"{' ...' if len(result.unexpected_keys) > 20 else ''}")
