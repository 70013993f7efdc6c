"""Loading weights from local files: ImageNet backbones and the seed repository's fusion-FC file.

The seed repository ships a single weights file for its fusion branch: a state dict with exactly
``fc.weight`` [14, 2048] and ``fc.bias`` [14] — the fusion FC only, no backbone. 2048 inputs = 1024 + 1024, the
concatenated max-pooled features of two DenseNet-121 branches (a ResNet-50 AG-CNN's fusion FC has 2048 + 2048 =
4096 inputs), and 14 outputs = the 14 findings without No Finding. So it loads into ``AGCNN(backbone=
"densenet121", num_classes=14).fusion`` and nowhere else; on its own it does not give a working classifier
(the branches it was trained with are not shipped).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from agcnn.model import AGCNN, Branch

_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "densenet121.", "features_extractor.")


def _load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return dict(obj)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_backbone(branch: Branch, path: str | Path) -> list[str]:
    """Load ImageNet (timm-format) weights from a local file into ``branch.backbone``; the classifier of the
    file is ignored. Returns the backbone keys that were not in the file; raises on a shape mismatch or when
    nothing matched."""
    sd = {_strip(k): v for k, v in _load_state_dict(path).items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    own = branch.backbone.state_dict()
    bad = [f"{k}: file {list(v.shape)} vs model {list(own[k].shape)}" for k, v in sd.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: shape mismatch for {len(bad)} key(s), e.g. {bad[:3]}")
    matched = [k for k in sd if k in own]
    if not matched:
        raise ValueError(f"{path}: no key matches the {type(branch.backbone).__name__} backbone "
                         f"(file keys e.g. {list(sd)[:3]}, model keys e.g. {list(own)[:3]})")
    missing = [k for k in own if k not in sd]
    branch.backbone.load_state_dict({k: sd[k] for k in matched}, strict=False)
    return missing


def load_seed_fusion_fc(model: AGCNN | nn.Linear, path: str | Path) -> None:
    """Load the seed repository's fusion weights ({fc.weight [14, 2048], fc.bias [14]}) into the fusion FC of a
    DenseNet-121 AG-CNN with 14 classes. A clear error names the shapes when they do not fit."""
    sd = {_strip(k): v for k, v in _load_state_dict(path).items()}
    keys = {k.split(".", 1)[1] if k.startswith(("fc.", "fusion.")) else k: v for k, v in sd.items()}
    if set(keys) != {"weight", "bias"}:
        raise ValueError(f"{path}: expected exactly fc.weight and fc.bias (the seed repository's fusion FC), "
                         f"found keys {sorted(sd)}")
    fc = model.fusion if isinstance(model, AGCNN) else model
    want_w, want_b = tuple(fc.weight.shape), tuple(fc.bias.shape)
    got_w, got_b = tuple(keys["weight"].shape), tuple(keys["bias"].shape)
    if (got_w, got_b) != (want_w, want_b):
        hint = ("the file is the fusion FC of a DenseNet-121 AG-CNN with 14 classes (2048 = 1024 + 1024 inputs); "
                "build AGCNN(backbone='densenet121', num_classes=14)")
        raise ValueError(f"{path}: fc.weight {list(got_w)} / fc.bias {list(got_b)} do not fit this fusion FC "
                         f"{list(want_w)} / {list(want_b)}; {hint}")
    with torch.no_grad():
        fc.weight.copy_(keys["weight"])
        fc.bias.copy_(keys["bias"])
