"""AG-CNN architecture (Guan et al. 2018): global branch, attention-guided local branch, fusion branch.

Architecture only — no file I/O (weights are loaded by ``agcnn.weights``).

    model = AGCNN(backbone="resnet50", num_classes=15)            # the paper's main model
    out = model(images)                                          # dict of logits + boxes + crops
    out["global"], out["local"], out["fusion"]                   # [B, C] logits (sigmoid -> probabilities)

Each branch is a timm backbone (ResNet-50 or DenseNet-121; any timm CNN with ``forward_features`` works) whose
last conv activations [B, K, h, w] are globally MAX-pooled (the paper; ``pool="avg"`` is the seed repository's
variant) and fed to FC(C). The fusion branch concatenates the two pooled vectors (2K) -> FC(C).
C = 15 in the paper (14 findings + No Finding), 14 in the seed repository.

Parameter counts (spec section 5; checked in tests): ResNet-50 branch with FC(15) 23,538,767; ResNet-50 AG-CNN
with C = 15: 2 x 23,538,767 + (4096 x 15 + 15) = 47,138,989; DenseNet-121 branch with FC(14) 6,968,206.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal

import torch
from torch import nn

from agcnn.crop import AttentionCrop
from shared.weights import create_timm_model

Pool = Literal["max", "avg"]


@dataclass
class BranchOutput:
    features: torch.Tensor  # [B, K, h, w] last conv activations
    pooled: torch.Tensor    # [B, K]
    logits: torch.Tensor    # [B, C]


class Branch(nn.Module):
    """Backbone -> global pooling -> FC(C). Used for the global and the local branch (separate weights)."""

    def __init__(self, backbone: str = "resnet50", num_classes: int = 15, pool: Pool = "max",
                 pretrained: bool = False, drop_rate: float = 0.0, backbone_kwargs: dict[str, Any] | None = None):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        # pretrained: timm's hub; offline a failed download is one line naming model.pretrained_path
        self.backbone = create_timm_model(backbone, pretrained=pretrained, key="model.pretrained_path",
                                          off_key="model.pretrained", num_classes=0, global_pool="",
                                          **(backbone_kwargs or {}))
        self.num_features = int(self.backbone.num_features)
        self.pool = pool
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes)

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        return features.amax(dim=(2, 3)) if self.pool == "max" else features.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> BranchOutput:
        features = self.backbone.forward_features(x)
        pooled = self.pooled(features)
        return BranchOutput(features, pooled, self.fc(self.dropout(pooled)))


class AGCNN(nn.Module):
    """The three branches plus the parameter-free attention crop between them.

    ``forward(images, source=None, tau=None)`` returns a dict with ``global``, ``local``, ``fusion`` logits
    [B, C], ``boxes`` [B, 4] (x0, y0, x1, y1 inclusive, pixels of ``images``), ``fallback`` [B] (full-image
    crops) and ``crops`` [B, 3, S, S]. ``source`` is an optional higher-resolution copy of the same images to crop
    from (boxes are scaled); by default the crop comes from ``images`` itself, as in the paper. ``branches``
    limits the work: ``("global",)`` skips the crop and the local branch (stage I).
    """

    def __init__(self, backbone: str = "resnet50", num_classes: int = 15, pool: Pool = "max",
                 pretrained: bool = False, drop_rate: float = 0.0, backbone_kwargs: dict[str, Any] | None = None,
                 tau: float = 0.7, heatmap_stat: str = "max", threshold: str = "fixed", crop_size: int = 224,
                 crop_method: str = "roi_align", max_label_iters: int | None = None, crop_labeler: str = "auto"):
        super().__init__()
        kw = dict(backbone=backbone, num_classes=num_classes, pool=pool, pretrained=pretrained,
                  drop_rate=drop_rate, backbone_kwargs=backbone_kwargs)
        self.global_branch = Branch(**kw)
        self.local_branch = Branch(**kw)
        self.num_classes = num_classes
        self.fusion = nn.Linear(self.global_branch.num_features + self.local_branch.num_features, num_classes)
        self.crop = AttentionCrop(tau=tau, stat=heatmap_stat, threshold=threshold, out_size=crop_size,
                                  method=crop_method, max_iters=max_label_iters, labeler=crop_labeler)
        self.trainable: set[str] = set(self.PARTS)

    PARTS = ("global", "local", "fusion")

    def parts(self) -> dict[str, nn.Module]:
        return {"global": self.global_branch, "local": self.local_branch, "fusion": self.fusion}

    def set_trainable(self, parts: Iterable[str]) -> "AGCNN":
        """Train only ``parts`` (of "global", "local", "fusion"): the others get ``requires_grad=False``, run
        under ``no_grad`` and stay in eval mode (BatchNorm statistics frozen) even when ``train()`` is called.
        Stage I = {"global"}, II = {"local"}, III = {"fusion"}; joint training = all three."""
        parts = set(parts)
        unknown = parts - set(self.PARTS)
        if unknown:
            raise ValueError(f"unknown part(s) {sorted(unknown)}; expected a subset of {self.PARTS}")
        self.trainable = parts
        for name, module in self.parts().items():
            for p in module.parameters():
                p.requires_grad_(name in parts)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "AGCNN":
        super().train(mode)
        for name, module in self.parts().items():
            if name not in self.trainable:
                module.eval()
        return self

    def forward(self, images: torch.Tensor, source: torch.Tensor | None = None, tau: float | None = None,
                branches: tuple[str, ...] = ("global", "local", "fusion")) -> dict[str, torch.Tensor]:
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and "global" in self.trainable):
            g = self.global_branch(images)
        out: dict[str, torch.Tensor] = {"global": g.logits}
        if not {"local", "fusion"} & set(branches):
            return out
        crops, info = self.crop(images, g.features, source=source, tau=tau)
        with torch.set_grad_enabled(grad and "local" in self.trainable):
            loc = self.local_branch(crops)
        out.update({"local": loc.logits, "boxes": info.boxes, "fallback": info.fallback, "crops": crops,
                    "heat": info.heat})
        if "fusion" in branches:
            out["fusion"] = self.fusion(torch.cat([g.pooled, loc.pooled], dim=1))
        return out

    def forward_local(self, images: torch.Tensor, features: torch.Tensor, pooled: torch.Tensor,
                      tau: float | None = None) -> dict[str, torch.Tensor]:
        """Local + fusion outputs from already computed global features (the tau sweep reuses them)."""
        crops, info = self.crop(images, features, tau=tau)
        loc = self.local_branch(crops)
        return {"local": loc.logits, "fusion": self.fusion(torch.cat([pooled, loc.pooled], dim=1)),
                "boxes": info.boxes, "heat": info.heat, "fallback": info.fallback}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
