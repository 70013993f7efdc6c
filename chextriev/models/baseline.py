"""Global ResNet50 baseline: full image 224 -> frozen ResNet50 -> fc1 2048->1024 -> ReLU -> fc2 1024->9.

Trained with BCE; the retrieval embedding is the 2048-d output of the frozen backbone (as in the original, so the
training does not change what is retrieved).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from chextriev.models.common import FrozenCNN


class GlobalCNN(nn.Module):
    """``forward(x)``: images (B, 3, H, W) or cached backbone features (B, F) -> {"logits", "embedding"}."""

    def __init__(self, backbone: str = "resnet50", pretrained_path: Optional[str] = None, bn_drift: bool = False,
                 dim: int = 1024, num_classes: int = 9, pretrained: bool = False):
        super().__init__()
        self.cnn = FrozenCNN(backbone, pretrained_path, bn_drift, pretrained)
        self.fc1 = nn.Linear(self.cnn.num_features, dim)
        self.fc2 = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() == 4:
            feats = self.cnn(x)
        elif x.dim() == 2:
            feats = x.float()
        else:
            raise ValueError(f"expected images (B,3,H,W) or cached features (B,F), got shape {tuple(x.shape)}")
        return {"logits": self.fc2(torch.relu(self.fc1(feats))), "embedding": feats}
