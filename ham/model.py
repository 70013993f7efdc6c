"""HAM: hierarchical attention for weakly-supervised chest X-ray abnormality localisation and diagnosis.

Ouyang et al., IEEE TMI 40(10):2698-2710, 2021. Architecture only (no file I/O, no CLI); written from the facts in
the spec's section 1.

    image (B,3,H,W) -> ResNet with HAM's stride/dilation table -> X (B,2048,H/8,W/8)
    FAModule(X) (B,512,h,w) ; F = head(cat[X, FA(X)]) (B,512,h,w)
    v = LSE_r(F) (B,512) -> anomaly head (1) and disease head (C), bias-free linear layers
    CAMs with the heads' weights detached -> refine_cams (bilinear up, min-max, soft threshold)

``HAM.forward`` returns ``HAMOutput(logit_ano, logit_cls, refined_ano, refined_cls, raw_ano, raw_cls)``, a
NamedTuple, so it unpacks like the original's 6-tuple.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# (Using_pooling, Downsampling) -> (strides of layer1..4, dilations of layer1..4 when Using_dilation)
STRIDE_DILATION_TABLE: dict[tuple[bool, int], tuple[tuple[int, ...], tuple[int, ...]]] = {
    (True, 32): ((1, 2, 2, 2), (1, 1, 1, 2)),
    (True, 16): ((1, 2, 2, 1), (1, 1, 1, 2)),
    (True, 8): ((1, 2, 1, 1), (1, 1, 2, 4)),
    (False, 32): ((2, 2, 2, 2), (1, 1, 1, 2)),
    (False, 16): ((1, 2, 2, 2), (1, 1, 2, 4)),
    (False, 8): ((1, 2, 2, 1), (1, 2, 4, 6)),
}
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d")


class HAMOutput(NamedTuple):
    logit_ano: torch.Tensor    # (B, 1)
    logit_cls: torch.Tensor    # (B, C)
    refined_ano: torch.Tensor  # (B, 1, H, W)   soft masks in (0, 1) at image size
    refined_cls: torch.Tensor  # (B, C, H, W)
    raw_ano: torch.Tensor      # (B, 1, h, w)   ReLU(CAM) at feature size (h = H / downsampling)
    raw_cls: torch.Tensor      # (B, C, h, w)


# ------------------------------------------------------------------------------------------------ backbone
def _set_conv(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    conv.stride = (stride, stride)
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _adjust_layer(layer: nn.Sequential, stride: int, dilation: int) -> None:
    """Give every block of ``layer`` the layer's dilation (first block included, padding = dilation) and the first
    block the layer's stride; add a 1x1 projection where a stride appears on a block that had none."""
    for j, block in enumerate(layer):
        s = stride if j == 0 else 1
        if isinstance(block, torchvision.models.resnet.Bottleneck):
            _set_conv(block.conv2, s, dilation)
        else:  # BasicBlock: both 3x3 convs dilated, the stride on the first
            _set_conv(block.conv1, s, dilation)
            _set_conv(block.conv2, 1, dilation)
        block.stride = s
        if j == 0:
            if block.downsample is not None:
                block.downsample[0].stride = (s, s)
            elif s != 1:
                conv = block.conv1
                out = block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features
                block.downsample = nn.Sequential(nn.Conv2d(conv.in_channels, out, 1, stride=s, bias=False),
                                                 nn.BatchNorm2d(out))


class Backbone(nn.Module):
    """A torchvision ResNet/ResNeXt without avgpool/fc, strides and dilations set from HAM's table."""

    def __init__(self, name: str = "resnet50", using_pooling: bool = True, downsampling: int = 8,
                 using_dilation: bool = True):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
        if (using_pooling, downsampling) not in STRIDE_DILATION_TABLE:
            raise ValueError(f"downsampling must be 8, 16 or 32, got {downsampling}")
        net = getattr(torchvision.models, name)(weights=None)
        strides, dilations = STRIDE_DILATION_TABLE[(using_pooling, downsampling)]
        if not using_dilation:
            dilations = (1, 1, 1, 1)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool = net.maxpool if using_pooling else nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        for layer, s, d in zip((self.layer1, self.layer2, self.layer3, self.layer4), strides, dilations):
            _adjust_layer(layer, s, d)
        self.out_channels = self.layer4[-1].conv3.out_channels if hasattr(self.layer4[-1], "conv3") \
            else self.layer4[-1].conv2.out_channels
        self.downsampling = downsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ------------------------------------------------------------------------------------ foreground attention
def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class FABlock(nn.Module):
    """Channel gate (global context -> bottleneck MLP -> sigmoid) then a one-channel spatial gate, added back to
    the input through a learnable scalar ``gamma`` (init 0)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // 8
        self.context = nn.Conv2d(channels, 1, 1, bias=False)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        self.transform = nn.Conv2d(channels, channels, 1, bias=False)
        self.spatial = nn.Conv2d(channels, 1, 1, bias=False)
        self.spatial_conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.context(x).flatten(2).softmax(dim=-1)                  # (B,1,HW)
        ctx = torch.bmm(x.flatten(2), attn.transpose(1, 2)).squeeze(-1)     # (B,C)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(ctx))))                  # (B,C)
        u = self.transform(x) * s[:, :, None, None]
        p = self.spatial(u)                                                  # (B,1,H,W)
        q = p * torch.sigmoid(self.spatial_bn(self.spatial_conv(p)))
        return self.gamma * q + x                                            # q broadcast over channels


class FAModule(nn.Module):
    """3x3 conv + BN (no ReLU) -> FABlock -> 3x3 conv + BN."""

    def __init__(self, cin: int = 2048, channels: int = 512):
        super().__init__()
        self.conv_in = nn.Sequential(conv3x3(cin, channels), nn.BatchNorm2d(channels))
        self.block = FABlock(channels)
        self.conv_out = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.block(self.conv_in(x)))


# ------------------------------------------------------------------------------------------------ pooling
def lse_pool(x: torch.Tensor, r: float = 6.0) -> torch.Tensor:
    """Log-sum-exp pooling per channel: [logsumexp(r * x over HxW) - log(HxW)] / r; (B,C,H,W) -> (B,C)."""
    hw = x.shape[-2] * x.shape[-1]
    flat = x.flatten(2)
    if flat.dtype in (torch.float16, torch.bfloat16):  # AMP: reduce in float32
        flat = flat.float()
    return ((torch.logsumexp(r * flat, dim=-1) - math.log(hw)) / r).to(x.dtype)


def cam(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ReLU(1x1 conv of ``features`` with a linear head's weight, detached): gradients reach the features only."""
    return F.relu(F.conv2d(features, weight.detach()[:, :, None, None].to(features.dtype)))


def refine_cams(cams: torch.Tensor, size: tuple[int, int], cam_w: float = 100.0,
                cam_sigma: float = 0.4) -> torch.Tensor:
    """Upsample (bilinear, align_corners=True) to ``size``, min-max normalise per (image, class) (a zero range
    becomes 1e-5) and soft-threshold: sigmoid(cam_w * (x - cam_sigma))."""
    up = F.interpolate(cams.float(), size=size, mode="bilinear", align_corners=True)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    rng = hi - lo
    rng = torch.where(rng == 0, torch.full_like(rng, 1e-5), rng)
    return torch.sigmoid(cam_w * ((up - lo) / rng - cam_sigma))


# ------------------------------------------------------------------------------------------------ the model
class HAM(nn.Module):
    def __init__(self, num_classes: int = 14, backbone: str = "resnet50", using_pooling: bool = True,
                 downsampling: int = 8, using_dilation: bool = True,
                 fa_channels: int = 512, head_channels: int = 512, dropout: float = 0.1, lse_r: float = 6.0,
                 cam_w: float = 100.0, cam_sigma: float = 0.4):
        super().__init__()
        self.backbone = Backbone(backbone, using_pooling, downsampling, using_dilation)
        cin = self.backbone.out_channels
        self.fa = FAModule(cin, fa_channels)
        self.head = nn.Sequential(conv3x3(cin + fa_channels, head_channels), nn.BatchNorm2d(head_channels),
                                  nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.ano_fc = nn.Linear(head_channels, 1, bias=False)
        self.cls_fc = nn.Linear(head_channels, num_classes, bias=False)
        bound = 1.0 / math.sqrt(head_channels)
        nn.init.uniform_(self.ano_fc.weight, -bound, bound)
        nn.init.uniform_(self.cls_fc.weight, -bound, bound)
        self.num_classes, self.lse_r, self.cam_w, self.cam_sigma = num_classes, lse_r, cam_w, cam_sigma

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F (B, head_channels, H/ds, W/ds)."""
        feat = self.backbone(x)
        return self.head(torch.cat([feat, self.fa(feat)], dim=1))

    def forward(self, x: torch.Tensor, refine: bool = True) -> HAMOutput:
        """``refine=False`` skips the image-size soft masks (refined_* are None): classification-only inference."""
        feats = self.features(x)
        pooled = lse_pool(feats, self.lse_r)
        logit_ano, logit_cls = self.ano_fc(pooled), self.cls_fc(pooled)
        raw_ano, raw_cls = cam(feats, self.ano_fc.weight), cam(feats, self.cls_fc.weight)
        if not refine:
            return HAMOutput(logit_ano, logit_cls, None, None, raw_ano, raw_cls)
        size = (x.shape[-2], x.shape[-1])
        refined_ano = refine_cams(raw_ano, size, self.cam_w, self.cam_sigma)
        refined_cls = refine_cams(raw_cls, size, self.cam_w, self.cam_sigma)
        return HAMOutput(logit_ano, logit_cls, refined_ano, refined_cls, raw_ano, raw_cls)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
