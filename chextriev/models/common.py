"""Pieces every CheXtriev model shares: the frozen CNN, the trainable node head, the gated residual.

The frozen CNN runs in eval mode by default (its BatchNorm layers use their ImageNet running statistics). The
original kept it in train mode, so BatchNorm normalised with batch statistics and its running statistics drifted
during training; ``bn_drift=True`` restores that behaviour (and makes a feature cache invalid).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from shared.weights import create_timm_model, read_state_dict_file
from shared.weights_manifest import TORCHVISION_DEFAULT_FILES, TORCHVISION_FILES, sha256_prefix


# torchvision's DEFAULT ImageNet weights, which every original model loads (spec section 7): ResNet50 -> IMAGENET1K_V2,
# DenseNet121 -> IMAGENET1K_V1, by their timm names
IMAGENET_DEFAULT_TAGS = {"resnet50": "resnet50.tv2_in1k", "densenet121": "densenet121.tv_in1k"}


def refuse_non_default_weights(path: str, name: str) -> None:
    """A local weights file that is one of torchvision's known files of ``name`` other than its DEFAULT one is one
    clear error: the old instructions named ResNet50's V1 weights, and every number would silently differ from the
    published ones. Files of unknown hash (re-saved state dicts, timm's) pass."""
    import hashlib

    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    default = TORCHVISION_DEFAULT_FILES.get(name)
    other = next((f for f in TORCHVISION_FILES if f.startswith(f"{name}-") and f != default
                  and digest.startswith(sha256_prefix(f))), None)
    if other:
        raise ValueError(f"model.pretrained_path: {path} is {TORCHVISION_FILES[other]} ({other}); the original used "
                         f"torchvision's DEFAULT weights: set it to the {default} file (or timm "
                         f"{IMAGENET_DEFAULT_TAGS.get(name, name)})")


def create_backbone(name: str, pretrained_path: Optional[str] = None, pretrained: bool = False) -> nn.Module:
    """timm backbone without classifier (``forward`` returns the pooled feature, ``num_features`` wide).

    ``pretrained_path``: a local state-dict file (a torchvision/timm ResNet or DenseNet checkpoint). Without one,
    ``pretrained=True`` takes the ImageNet weights from timm's hub — torchvision's DEFAULT ones, as the original
    (:data:`IMAGENET_DEFAULT_TAGS`); offline with nothing cached that is one error naming
    ``model.pretrained_path``. ``pretrained=False`` and no path: random init (the demo and the tests).
    """
    import timm

    if not pretrained_path:
        tag = IMAGENET_DEFAULT_TAGS.get(name, name) if pretrained else name
        return create_timm_model(tag, pretrained=pretrained, key="model.pretrained_path",
                                 off_key="model.pretrained", num_classes=0)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    state = read_state_dict_file(pretrained_path, "model.pretrained_path")
    refuse_non_default_weights(pretrained_path, name)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{pretrained_path}: weights do not fit timm '{name}': missing {missing[:5]}..., "
                         f"unexpected {unexpected[:5]}...")
    return model


class FrozenCNN(nn.Module):
    """A frozen feature extractor. ``forward(images (B,3,H,W)) -> (B, num_features)``."""

    def __init__(self, name: str = "resnet50", pretrained_path: Optional[str] = None, bn_drift: bool = False,
                 pretrained: bool = False):
        super().__init__()
        self.net = create_backbone(name, pretrained_path, pretrained)
        self.num_features = int(self.net.num_features)
        self.bn_drift = bn_drift
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True):  # noqa: D401 - keeps the frozen net in eval mode unless bn_drift
        super().train(mode)
        if not self.bn_drift:
            self.net.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(images)


class NodeHead(nn.Module):
    """The trainable head on each crop feature: Linear(F, 1024) -> ReLU -> Linear(1024, 1024)."""

    def __init__(self, in_dim: int = 2048, dim: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AnatomyEncoder(nn.Module):
    """18 anatomy crops -> 18 node features.

    ``forward(x)`` takes either crops ``(B, N, 3, H, W)`` (run through the frozen CNN) or cached CNN features
    ``(B, N, F)`` (the frozen CNN is skipped; identical result when the CNN is in eval mode), and returns
    ``(B, N, dim)``. With ``head=False`` the CNN features are returned unchanged (AnaXNet).
    """

    def __init__(self, backbone: str = "resnet50", pretrained_path: Optional[str] = None, bn_drift: bool = False,
                 dim: int = 1024, head: bool = True, pretrained: bool = False):
        super().__init__()
        self.cnn = FrozenCNN(backbone, pretrained_path, bn_drift, pretrained)
        self.head = NodeHead(self.cnn.num_features, dim) if head else nn.Identity()
        self.out_dim = dim if head else self.cnn.num_features

    def cnn_features(self, crops: torch.Tensor) -> torch.Tensor:
        b, n = crops.shape[:2]
        return self.cnn(crops.flatten(0, 1)).view(b, n, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = self.cnn_features(x)
        elif x.dim() != 3:
            raise ValueError(f"expected crops (B,N,3,H,W) or cached features (B,N,F), got shape {tuple(x.shape)}")
        return self.head(x.float())


class GatedResidual(nn.Module):
    """G(x, r) = g x + (1 - g) r with g = sigmoid(w [x, r, x - r]), w: Linear(3 dim -> 1, no bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(3 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.proj(torch.cat([x, res, x - res], dim=-1)))
        return gate * x + (1 - gate) * res


class NormLinear(nn.Module):
    """LayerNorm + Linear (the classification heads of V0-V6 and AnaXNet)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
