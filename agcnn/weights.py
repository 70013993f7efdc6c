"""Loading weights from local files: ImageNet backbones and the seed repository's fusion-FC file.

The seed repository ships a single weights file for its fusion branch: a state dict with exactly
``fc.weight`` [14, 2048] and ``fc.bias`` [14] — the fusion FC only, no backbone. 2048 inputs = 1024 + 1024, the
concatenated max-pooled features of two DenseNet-121 branches (a ResNet-50 AG-CNN's fusion FC has 2048 + 2048 =
4096 inputs), and 14 outputs = the 14 findings without No Finding. So it loads into ``AGCNN(backbone=
"densenet121", num_classes=14).fusion`` and nowhere else; on its own it does not give a working classifier
(the branches it was trained with are not shipped).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from shared.weights import read_state_dict_file

from agcnn.model import AGCNN, Branch

_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "densenet121.", "features_extractor.")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


# torchvision's DenseNet files from before its layer renaming (e.g. densenet121-a639ec97.pth) name the layers of a
# dense block ``denselayerN.norm.1`` / ``conv.2`` where torchvision today and timm say ``norm1`` / ``conv2``;
# torchvision renames them on load, so do we. For densenet121 / resnet50 every other key of a torchvision file is
# already the timm name (checked in tests against timm 1.0).
_KEY_MAP = ((re.compile(r"(denselayer\d+\.)(norm|relu|conv)\.([12])\."), r"\1\2\3."),)
# Buffers a file may lack without changing the model: old PyTorch (< 0.4.1) files have no BatchNorm counter.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def canonical_key(key: str) -> str:
    """A file's key in the timm backbone's naming: wrapper prefixes stripped, legacy torchvision names mapped."""
    key = _strip(key)
    for pattern, repl in _KEY_MAP:
        key = pattern.sub(repl, key)
    return key


def load_backbone(branch: Branch, path: str | Path) -> list[str]:
    """Load ImageNet weights (timm or torchvision format, legacy torchvision DenseNet names included) from a
    local file into ``branch.backbone``; the classifier of the file is ignored. Every backbone tensor must come
    from the file: a shape mismatch or a missing key is a ValueError naming the keys (the first 10 and the
    count). Only BatchNorm's ``num_batches_tracked`` counters may be absent (old files lack them); those keys are
    returned (they keep their initial value)."""
    sd = {canonical_key(k): v for k, v in read_state_dict_file(path, "model.pretrained_path").items()}
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
    required = [k for k in missing if not k.endswith(_OPTIONAL_SUFFIXES)]
    if required:
        unused = [k for k in sd if k not in own]
        raise ValueError(f"{path}: incomplete weights for the {type(branch.backbone).__name__} backbone: "
                         f"{len(required)} of {len(own)} tensors missing from the file, e.g. {required[:10]}"
                         + (f"; {len(unused)} file key(s) matched nothing, e.g. {unused[:10]}" if unused else ""))
    branch.backbone.load_state_dict({k: sd[k] for k in matched}, strict=False)
    return missing


def load_seed_fusion_fc(model: AGCNN | nn.Linear, path: str | Path) -> None:
    """Load the seed repository's fusion weights ({fc.weight [14, 2048], fc.bias [14]}) into the fusion FC of a
    DenseNet-121 AG-CNN with 14 classes. A clear error names the shapes when they do not fit."""
    sd = {_strip(k): v for k, v in read_state_dict_file(path, "model.seed_fusion_fc").items()}
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
