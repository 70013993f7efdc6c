"""HAM weights from a file or a state dict: our checkpoints and the authors' released ``.pth`` models, one loader.

    from ham.checkpoint import load_weights
    load_weights(model, "runs/ham/nih_cls_fold1/<ts>/checkpoints/best.pt")   # ours (shared.engine format)
    load_weights(model, "resnet50_best_auc.pth")                              # the authors' (module.model.*)

The authors' files are ``torch.save(net.state_dict())`` of the DataParallel-wrapped model: every key is
``module.model.<name>``. Their names map onto ours by prefix (:data:`ORIGINAL_TO_OURS`, the roles from the
layouts README); the backbone keeps torchvision's names. Strides and dilations change no name or shape, so one map
serves every Downsampling setting. Loading is strict: a file of another method, backbone or class count is one
error naming the file and listing every unmatched key, and nothing is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from shared.engine import load_checkpoint, load_model_weights, weights_from_checkpoint
from shared.engine.checkpoint import CheckpointError, WeightsMismatchError

__all__ = ["ORIGINAL_TO_OURS", "load_weights", "ours_to_original"]

# authors' prefix (after ``module.``) -> ours. Inside the foreground-attention block: conv1 = the 1x1 context
# conv, channel_fc.0 / .2 = the channel gate's two FC layers, conv2 = the gated 1x1 transform, conv3 = the 1x1
# projection p, conv4 + bn4 = the spatial gate's 3x3 conv and BN.
ORIGINAL_TO_OURS: dict[str, str] = {
    "model.conv1.": "backbone.conv1.", "model.bn1.": "backbone.bn1.",
    **{f"model.layer{i}.": f"backbone.layer{i}." for i in (1, 2, 3, 4)},
    "model.fa_layer.conva.": "fa.conv_in.", "model.fa_layer.convb.": "fa.conv_out.",
    "model.fa_layer.fa.conv1.": "fa.block.context.",
    "model.fa_layer.fa.channel_fc.0.": "fa.block.fc1.", "model.fa_layer.fa.channel_fc.2.": "fa.block.fc2.",
    "model.fa_layer.fa.conv2.": "fa.block.transform.", "model.fa_layer.fa.conv3.": "fa.block.spatial.",
    "model.fa_layer.fa.conv4.": "fa.block.spatial_conv.", "model.fa_layer.fa.bn4.": "fa.block.spatial_bn.",
    "model.fa_layer.fa.gamma": "fa.block.gamma",
    "model.cls_head.": "head.", "model.anomaly_fc.": "ano_fc.", "model.cls_fc.": "cls_fc.",
}


def ours_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' names (without ``module.``): the inverse of :data:`ORIGINAL_TO_OURS`."""
    out = {}
    for key, value in state.items():
        orig = next((o + key[len(ours):] for o, ours in ORIGINAL_TO_OURS.items() if key.startswith(ours)), None)
        out[key if orig is None else orig] = value
    return out


def _is_original(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("module.").startswith("model.") for k in state)


def _state_of(obj, name: str) -> Mapping[str, torch.Tensor]:
    """The weights inside a loaded object: our checkpoint's (EMA / best_source as shared.engine picks) or a raw
    state dict of tensors."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return weights_from_checkpoint(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CheckpointError(f"{name}: not a HAM checkpoint (expected our checkpoint with a 'model' entry or the "
                          "authors' state dict of module.model.* tensors)")


def load_weights(model: torch.nn.Module, path_or_state_dict: str | Path | Mapping) -> str:
    """Load our checkpoint or the authors' ``.pth`` (file path or the loaded object) into ``model``, strictly.

    Returns a note naming the layout that was read. Raises :class:`shared.engine.checkpoint.CheckpointError`
    (one line naming the file) for a missing, truncated or non-checkpoint file, and one error listing every
    missing / unexpected / mis-shaped key for weights of another method, backbone or class count; in both cases
    the model is left untouched."""
    if isinstance(path_or_state_dict, (str, Path)):
        name = str(path_or_state_dict)
        obj = load_checkpoint(path_or_state_dict)        # weights_only=True; errors name the file
    else:
        name, obj = "state dict", path_or_state_dict
    state = _state_of(obj, name)
    original = _is_original(state)
    layout = "the authors' released layout (module.model.*)" if original else "our layout"
    try:
        load_model_weights(model, state, strict=True, key_map=ORIGINAL_TO_OURS if original else None)
    except WeightsMismatchError as err:
        listing = "\n".join(str(err).splitlines()[1:])     # the first line is the generic "does not fit"
        raise CheckpointError(f"{name} ({layout}) does not fit this HAM ({model.num_classes} classes, Downsampling "
                              f"{model.backbone.downsampling}); nothing loaded:\n{listing}") from None
    return f"weights: {name} ({layout})"
