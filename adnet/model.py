"""ADNet: attentional decoder + harmonic magnitude transform on a timm backbone (architecture only).

Kang, Kim, Ryu, "Attentional Decoder Networks for Chest X-ray Image Recognition on High-resolution Features",
CMPB 2024. Clean-room implementation from the facts in the project's spec (no code of the original).

Data flow for an input of side H (ConvNeXt-T numbers; ResNet50 in brackets)::

    backbone (timm, unchanged) -> stage2 (192 [512] ch, H/8), stage3 (384 [1024], H/16), stage4 (768 [2048], H/32)
    AD1 = CrossAttentionDecoderLayer(query=stage3, key/value=stage4)      -> tokens (B, (H/16)^2, 384 [1024])
    AD2 = CrossAttentionDecoderLayer(query=stage2, key/value=AD1 output)  -> tokens (B, (H/8)^2, 192 [512])
    fc_layer: 1x1 conv to the last stage's width on the H/8 map           -> (B, 768 [2048], H/8, W/8)
    HMT: |rfft2(Z)/(hw)| cropped to 15x15, depthwise 15x15 filter + BN, residual 1x1 conv + BN -> (B, 768 [2048])
    head: LayerNorm -> Linear (ConvNeXt) | Linear (ResNet)                -> logits (B, K)

Two "styles" follow the two published backbones (``style`` is inferred from the timm name):

============================ ================================= ==========================================
                             ``convnext``                      ``resnet``
============================ ================================= ==========================================
q / kv projections           Linear, no bias                   grouped (groups=2) 1x1 conv, no bias
MLP ratio                    4                                 2
MLP                          1x1-BN-GELU-dw3x3-BN-GELU-1x1-BN   1x1-GELU-BN-(dw3x3 + id)-GELU-BN-1x1-BN
fc_layer                     1x1 conv, no bias                 1x1 conv (no bias) + BN + ReLU
head                         LayerNorm(eps 1e-6) -> Linear      Linear
init of the added parts      PyTorch default                   Kaiming fan_out (conv) / trunc-normal .02
                                                               (backbone: timm's init or pretrained)
============================ ================================= ==========================================

``MODEL_NAMES`` lists the 16 original model names with their default class counts; :func:`build_model` builds one
(random weights; loading checkpoints lives in :mod:`adnet.checkpoint`, which does the file I/O).
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared.weights import create_timm_model

__all__ = [
    "ADNet", "CrossAttention", "DecoderLayer", "ConvMlp", "HarmonicMagnitudeTransform", "MODEL_NAMES",
    "build_model", "parse_model_name", "min_input_size",
]

Style = Literal["convnext", "resnet"]

# The 16 names of the original timm registry -> default number of classes.
# IN1K = whole ADNet pretrained on ImageNet-1k; ALL = IN1K trained further on NIH+MIMIC+CheXpert (21 classes);
# a dataset suffix = fine-tuned on that dataset.
_SUFFIX_CLASSES = {"IN1K": 1000, "IN1K_NIH": 14, "IN1K_MIMIC": 14, "IN1K_CheXpert": 5,
                   "ALL": 21, "ALL_NIH": 14, "ALL_MIMIC": 14, "ALL_CheXpert": 5}
_BACKBONES = ("convnext_tiny", "resnet50")
MODEL_NAMES: dict[str, int] = {f"{b}_ADNet_{s}": k for b in _BACKBONES for s, k in _SUFFIX_CLASSES.items()}


def min_input_size(dft_size: int = 15, stride: int = 8) -> int:
    """Smallest input side for which the stride-8 map's spectrum covers ``dft_size`` non-negative frequencies.

    The crop keeps rows 0..dft_size-1 of the full FFT axis (non-negative only if h // 2 >= dft_size - 1) and
    columns 0..dft_size-1 of the half-spectrum (w // 2 + 1 >= dft_size): both need h, w >= 2 (dft_size - 1),
    i.e. an input of at least 16 (dft_size - 1) px = 224 px for the published 15x15 crop.
    """
    return stride * 2 * (dft_size - 1)


def _fp32_region(device: torch.device):
    """Autocast switched off (the HMT runs in fp32 even under AMP); a no-op on devices without autocast (meta)."""
    if device.type in ("cuda", "cpu", "xpu", "mps", "hpu", "xla"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _infer_style(backbone: str) -> Style:
    if backbone.startswith("convnext"):
        return "convnext"
    if backbone.startswith(("resnet", "resnext", "wide_resnet", "seresnet", "ecaresnet")):
        return "resnet"
    raise ValueError(f"cannot infer the ADNet style of backbone {backbone!r}; pass style='convnext' or 'resnet'")


# ------------------------------------------------------------------------------------------------ decoder
class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from one token set, keys/values from another (no self-attention).

    ``q``: (dim -> dim), ``kv``: (kv_dim -> 2 dim, first half keys, second half values), ``proj``: Linear(dim, dim)
    with bias. ``grouped=True`` uses 1x1 convolutions with groups=2 for q and kv (ResNet style).
    Attention is :func:`torch.nn.functional.scaled_dot_product_attention` (scale 1/sqrt(head_dim)).
    """

    def __init__(self, dim: int, kv_dim: int, num_heads: int, grouped: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"query width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.grouped = grouped
        if grouped:
            self.q = nn.Conv2d(dim, dim, 1, groups=2, bias=False)
            self.kv = nn.Conv2d(kv_dim, 2 * dim, 1, groups=2, bias=False)
        else:
            self.q = nn.Linear(dim, dim, bias=False)
            self.kv = nn.Linear(kv_dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def _project(self, layer: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        if not self.grouped:
            return layer(tokens)
        # (B, N, C) -> (B, C, N, 1) -> 1x1 grouped conv -> (B, N, C')
        return layer(tokens.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = query.shape
        m = context.shape[1]
        q = self._project(self.q, query).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self._project(self.kv, context).reshape(b, m, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (B, heads, N, head_dim); no dropout
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _DwResidual(nn.Module):
    """3x3 depthwise conv plus identity (the ResNet-style MLP's middle)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class ConvMlp(nn.Sequential):
    """The decoder's MLP on the 2-D map (all convolutions with bias).

    convnext: 1x1 conv -> BN -> GELU -> 3x3 dw conv -> BN -> GELU -> 1x1 conv -> BN
    resnet:   1x1 conv -> GELU -> BN -> (3x3 dw conv + identity) -> GELU -> BN -> 1x1 conv -> BN
    """

    def __init__(self, dim: int, hidden: int, style: Style):
        if style == "convnext":
            layers = [nn.Conv2d(dim, hidden, 1), nn.BatchNorm2d(hidden), nn.GELU(),
                      nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.BatchNorm2d(hidden), nn.GELU(),
                      nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim)]
        else:
            layers = [nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.BatchNorm2d(hidden),
                      _DwResidual(hidden), nn.GELU(), nn.BatchNorm2d(hidden),
                      nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim)]
        super().__init__(*layers)


class DecoderLayer(nn.Module):
    """Pre-norm cross-attention decoder layer (no self-attention, no dropout, no drop-path).

    x = q + Attn(LN_q(q), LN_kv(kv));  x = x + MLP(LN(x)) with the MLP on the (h, w) map. Output: (B, h*w, dim).
    """

    def __init__(self, dim: int, kv_dim: int, num_heads: int, mlp_ratio: int, style: Style):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(kv_dim, eps=1e-6)
        self.attn = CrossAttention(dim, kv_dim, num_heads, grouped=style == "resnet")
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvMlp(dim, dim * mlp_ratio, style)

    def forward(self, query_map: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``query_map``: (B, C, h, w); ``context``: (B, C', h', w') map or (B, M, C') tokens."""
        b, c, h, w = query_map.shape
        q = query_map.flatten(2).transpose(1, 2)
        kv = context.flatten(2).transpose(1, 2) if context.dim() == 4 else context
        x = q + self.attn(self.norm_q(q), self.norm_kv(kv))
        y = self.norm_mlp(x).transpose(1, 2).reshape(b, c, h, w)
        return x + self.mlp(y).flatten(2).transpose(1, 2)


# -------------------------------------------------------------------------------------------------- HMT
class HarmonicMagnitudeTransform(nn.Module):
    """Harmonic magnitude transform: a learnable pooling of each channel's low-frequency amplitude spectrum.

    F_c = rfft2(Z_c, norm="forward") (fp32, also under autocast); M_c = |F_c|[:k, :k] (DC at [0, 0], phase
    dropped); s = BN1(depthwise k x k filter (no bias) of M); out = s + BN2(W s) with W a CxC 1x1 conv (no bias).
    |F_c[0, 0]| = |mean(Z_c)|, so the DC term is |global average pooling|. Output: (B, C).
    """

    def __init__(self, channels: int, dft_size: int = 15):
        super().__init__()
        self.dft_size = dft_size
        self.filter = nn.Conv2d(channels, channels, dft_size, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def spectrum(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> cropped amplitude spectrum (B, C, k, k) in fp32."""
        k = self.dft_size
        h, w = z.shape[-2:]
        if h // 2 < k - 1 or w // 2 < k - 1:
            raise ValueError(f"HMT needs a feature map of at least {2 * (k - 1)}x{2 * (k - 1)} for a {k}x{k} "
                             f"low-frequency crop, got {h}x{w} (input too small: the map is input/8)")
        with _fp32_region(z.device):
            spec = torch.fft.rfft2(z.float(), norm="forward")
            return spec[..., :k, :k].abs()

    def pool(self, m: torch.Tensor) -> torch.Tensor:
        """Cropped spectrum (B, C, k, k) -> (B, C), in fp32 (autocast off)."""
        with _fp32_region(m.device):
            m = m.float()
            s = self.bn1(self.filter(m))
            s = s + self.bn2(self.proj(s))
        return s.flatten(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool(self.spectrum(z))


# ------------------------------------------------------------------------------------------------ model
class ADNet(nn.Module):
    """ADNet on a timm backbone (the backbone is timm's, unchanged; stage outputs via ``forward_intermediates``).

    Args:
        backbone: timm model name with a stride-8/16/32 stage structure (convnext_*, resnet*).
        num_classes: K; 0 gives an identity classifier (features only).
        style: "convnext" or "resnet" (decoder flavour, see the module docstring); inferred from ``backbone``.
        head_dim: attention head width (32 in the paper; heads = query channels / head_dim).
        dft_size: side of the low-frequency crop (15 in the paper; fixes the minimum input size).
        drop_path_rate: passed to the backbone. The original declared one but never applied it, so the
            faithful value is 0.0.
        backbone_kwargs: extra kwargs for ``timm.create_model`` (e.g. ``pretrained_cfg_overlay``).
        pretrained_backbone: ``timm.create_model(..., pretrained=True)`` for the backbone (with
            ``backbone_kwargs=dict(pretrained_cfg_overlay=dict(file=PATH))`` for a local file). Those weights are
            kept: the ResNet-style re-initialisation touches only the added parts (decoder, fc_layer, HMT, head).
    """

    def __init__(self, backbone: str = "convnext_tiny", num_classes: int = 14, style: Style | None = None,
                 head_dim: int = 32, dft_size: int = 15, drop_path_rate: float = 0.0,
                 backbone_kwargs: dict | None = None, pretrained_backbone: bool = False):
        super().__init__()
        self.style: Style = style or _infer_style(backbone)
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.dft_size = dft_size
        self.min_input_size = min_input_size(dft_size)
        kwargs = dict(backbone_kwargs or {})
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.backbone = create_timm_model(backbone, pretrained=pretrained_backbone, key="model.backbone_weights",
                                          off_key=None, num_classes=0, **kwargs)
        info = self.backbone.feature_info
        by_reduction = {f["reduction"]: i for i, f in enumerate(info)}
        missing = [r for r in (8, 16, 32) if r not in by_reduction]
        if missing:
            raise ValueError(f"backbone {backbone!r} has no stage output at stride(s) {missing}")
        self.stage_indices = [by_reduction[8], by_reduction[16], by_reduction[32]]
        self.backbone.prune_intermediate_layers(self.stage_indices, prune_norm=True, prune_head=True)
        c8, c16, c32 = (info[i]["num_chs"] for i in self.stage_indices)
        self.feature_channels = (c8, c16, c32)

        mlp_ratio = 4 if self.style == "convnext" else 2
        for c in (c8, c16):
            if c % head_dim:
                raise ValueError(f"stage width {c} of {backbone!r} is not divisible by head_dim={head_dim}")
        self.decoder = nn.ModuleList([
            DecoderLayer(c16, c32, c16 // head_dim, mlp_ratio, self.style),  # AD1: query stage 3, kv stage 4
            DecoderLayer(c8, c16, c8 // head_dim, mlp_ratio, self.style),    # AD2: query stage 2, kv AD1 out
        ])
        if self.style == "convnext":
            self.fc_layer = nn.Sequential(nn.Conv2d(c8, c32, 1, bias=False))
        else:
            self.fc_layer = nn.Sequential(nn.Conv2d(c8, c32, 1, bias=False), nn.BatchNorm2d(c32), nn.ReLU(inplace=True))
        self.num_features = c32
        self.hmt = HarmonicMagnitudeTransform(c32, dft_size)
        self.norm = nn.LayerNorm(c32, eps=1e-6) if self.style == "convnext" else nn.Identity()
        self.head = nn.Linear(c32, num_classes) if num_classes > 0 else nn.Identity()
        if self.style == "resnet":   # the added parts only: the backbone keeps timm's (possibly pretrained) weights
            for part in (self.decoder, self.fc_layer, self.hmt, self.norm, self.head):
                part.apply(_init_resnet_style)

    # -- timm-like API -------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"ADNet expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            raise ValueError(f"ADNet needs inputs of at least {self.min_input_size}x{self.min_input_size} px "
                             f"(the {self.dft_size}x{self.dft_size} spectrum crop of the stride-8 map), got {h}x{w}")

    def forward_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate the spec names: stages, AD1/AD2 tokens, fc_layer map, DFT crop, HMT out, logits."""
        self.check_input(x)
        s8, s16, s32 = self.backbone.forward_intermediates(x, indices=self.stage_indices, intermediates_only=True)
        ad1 = self.decoder[0](s16, s32)
        ad2 = self.decoder[1](s8, ad1)
        b, c, h, w = s8.shape
        z = self.fc_layer(ad2.transpose(1, 2).reshape(b, c, h, w))
        dft = self.hmt.spectrum(z)
        hmt = self.hmt.pool(dft)
        embedding = self.norm(hmt)
        return {"stage2": s8, "stage3": s16, "stage4": s32, "ad1": ad1, "ad2": ad2, "fc_layer": z, "dft": dft,
                "hmt": hmt, "embedding": embedding, "logits": self.head(embedding)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """HMT output (B, C) (before the head's LayerNorm)."""
        self.check_input(x)
        s8, s16, s32 = self.backbone.forward_intermediates(x, indices=self.stage_indices, intermediates_only=True)
        ad2 = self.decoder[1](s8, self.decoder[0](s16, s32))
        b, c, h, w = s8.shape
        return self.hmt(self.fc_layer(ad2.transpose(1, 2).reshape(b, c, h, w)))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        features = self.norm(features)
        return features if pre_logits else self.head(features)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The k-NN feature of the spec: LayerNorm(HMT out) for ConvNeXt, HMT out for ResNet (not normalised)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.style == "resnet" and num_classes > 0:
            _init_resnet_style(self.head)

    def get_classifier(self) -> nn.Module:
        return self.head

    def parameter_groups(self) -> dict[str, int]:
        """Parameter counts of the parts the spec lists (backbone incl. the head's LayerNorm, as in the spec)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"backbone": count(self.backbone) + count(self.norm), "decoder": count(self.decoder),
                "ad1": count(self.decoder[0]), "ad2": count(self.decoder[1]), "fc_layer": count(self.fc_layer),
                "hmt": count(self.hmt), "head": count(self.head), "total": count(self)}


def _init_resnet_style(m: nn.Module) -> None:
    """The ResNet variant's re-initialisation: Kaiming fan_out for convs, trunc-normal(0.02) for Linear."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
        if m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------- registry
def parse_model_name(name: str) -> tuple[str, int]:
    """``convnext_tiny_ADNet_IN1K_NIH`` -> ("convnext_tiny", 14). Any ``<timm backbone>_ADNet`` is accepted too
    (default 14 classes) so tiny variants (``convnext_atto_ADNet``) go through the same code."""
    if name in MODEL_NAMES:
        return name.split("_ADNet")[0], MODEL_NAMES[name]
    if name.endswith("_ADNet"):
        return name[: -len("_ADNet")], 14
    raise ValueError(f"unknown ADNet model {name!r}; known: {sorted(MODEL_NAMES)} or '<timm backbone>_ADNet'")


def build_model(name: str, num_classes: int | None = None, **kwargs) -> ADNet:
    """Build a registered ADNet (random weights; see :func:`adnet.create_model` to load a checkpoint file)."""
    backbone, default_classes = parse_model_name(name)
    return ADNet(backbone, num_classes=default_classes if num_classes is None else num_classes, **kwargs)
