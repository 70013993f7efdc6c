"""Shared fixtures: tiny ADNet variants that go through the same code as the published ones."""
from __future__ import annotations

import pytest
import torch

from adnet.model import ADNet

# A ConvNeXt with the stage structure of ConvNeXt-T (4 stages, strides 4/8/16/32) but 16..128 channels and one
# block per stage; head_dim 16 and a 7x7 spectrum crop (minimum input 96 px) keep it CPU-cheap.
TINY_CONVNEXT = dict(backbone="convnext_atto", head_dim=16, dft_size=7,
                     backbone_kwargs=dict(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)))
# ResNet-18's BasicBlock layout with one block per stage and 16..128 channels (same stride-8/16/32 stages).
TINY_RESNET = dict(backbone="resnet18", head_dim=16, dft_size=7,
                   backbone_kwargs=dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny models: one thread is as fast and robust when the cores are shared
    yield


def tiny_model(style: str = "convnext", num_classes: int = 14, seed: int = 0) -> ADNet:
    torch.manual_seed(seed)
    cfg = TINY_CONVNEXT if style == "convnext" else TINY_RESNET
    return ADNet(num_classes=num_classes, **cfg)
