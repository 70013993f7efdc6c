"""ATH: attention-based triplet hashing (the CheXtriev paper's hashing baseline), 48,394 parameters.

    ResBlock(3->16, s2) -> MaxPool 3 -> spatial attention -> ResBlock(16->8, s2) -> AvgPool 3 -> ResBlock(8->1, s2)
    -> flatten (1 x 32 x 32 = 1024 for a 256^2 input) -> hash Linear(1024, bits) and type Linear(1024, classes)

ResBlock = conv3x3(s) BN ReLU conv3x3 BN + shortcut conv3x3(s) BN, then ReLU; convolutions without bias.
The pools are 3x3, stride 1, padding 1 (size-preserving), so three stride-2 blocks take 256 -> 32. Spatial
attention = sigmoid(conv3x3([channel mean, channel max])) multiplying the features. This is the one layout of the
described blocks that gives exactly the published 48,394 parameters. Every Conv2d and Linear weight starts from
``xavier_normal_`` (the original's init; biases keep PyTorch's default).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class ATHNet(nn.Module):
    """``forward(images (B, 3, 256, 256)) -> {"logits" (B, classes), "hash" (B, bits), "embedding" = hash}``."""

    def __init__(self, bits: int = 32, num_classes: int = 9, input_size: int = 256):
        super().__init__()
        if input_size % 8:
            raise ValueError(f"ATH input size must be a multiple of 8, got {input_size}")
        self.input_size = input_size
        self.features = nn.Sequential(
            ResBlock(3, 16), nn.MaxPool2d(3, 1, 1), SpatialAttention(3),
            ResBlock(16, 8), nn.AvgPool2d(3, 1, 1), ResBlock(8, 1))
        flat = (input_size // 8) ** 2
        self.hash = nn.Linear(flat, bits)
        self.fc_type = nn.Linear(flat, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() != 4 or x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"ATH expects images (B, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        flat = self.features(x).flatten(1)
        code = self.hash(flat)
        return {"logits": self.fc_type(flat), "hash": code, "embedding": code}
