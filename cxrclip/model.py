"""CXR-CLIP: an image encoder and a BERT text encoder projected into one 512-d space (architecture only).

Image encoders: torchvision ResNet (fc removed, 2048-d average-pooled output) or a HF Swin (hidden 768); the
original takes Swin's first patch token (``last_hidden_state[:, 0]``), the CGMH fork the mean (``pooler_output``).
Text encoder: HF BERT (Bio_ClinicalBERT in the paper) pooled at the [SEP] token ("eos": index
``attention_mask.sum(-1) - 1``). Both go through a Linear(in, 512) with bias and are L2-normalised.
The temperature is a learnable ``logit_scale`` initialised to log(1/0.07) and not clamped (as published).

Weights come from local paths only (``pretrained``); without one the encoders are randomly initialised from a
config, which is what the tests and the synthetic demo use. ``CXRClip(cfg, load_pretrained=False)`` builds the
same architecture without reading any pretrained weights (evaluating a checkpoint that holds them all): the
ResNet needs no file then, Swin and BERT only the ``config.json`` of their local folders. A missing folder or
file is one ``FileNotFoundError`` naming it and the config key to change; nothing is ever downloaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from transformers import BertConfig, BertModel, SwinConfig, SwinModel

from shared.weights import read_state_dict_file


@dataclass
class ImageEncoderConfig:
    name: Literal["resnet50", "resnet18", "swin"] = "resnet50"
    pretrained: str | None = None        # resnet: torchvision state-dict file; swin: local HF model directory
    swin: dict[str, Any] = field(default_factory=dict)  # SwinConfig overrides when not pretrained (tiny tests)
    swin_pooling: Literal["first_token", "mean"] = "first_token"  # first_token = original; mean = CGMH fork


@dataclass
class TextEncoderConfig:
    pretrained: str | None = None        # local HF directory (e.g. a saved Bio_ClinicalBERT)
    bert: dict[str, Any] = field(default_factory=dict)  # BertConfig overrides when not pretrained
    pooling: Literal["eos", "cls", "mean"] = "eos"


@dataclass
class ModelConfig:
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    projection_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)
    # Recompute the transformer layers (BERT, Swin) in backward instead of storing their activations: the same
    # gradients (dropout masks are replayed) for ~1/10 of BERT's activation memory, which is what lets the
    # recipe's 128-sample batch fit one 24 GB GPU. ResNet is left alone: recomputing BatchNorm in train mode would
    # update its running statistics twice per step.
    grad_checkpointing: bool = False


def local_hf_dir(path: str, key: str, what: str, repo_id: str) -> str:
    """``path`` if it is a local Hugging Face folder (with ``config.json``), else one error naming the key."""
    if not (Path(path) / "config.json").is_file():
        found = "has no config.json" if Path(path).is_dir() else "not found"
        raise FileNotFoundError(f"{key}: {what} folder {path} {found} (expected a local Hugging Face folder: "
                                f"config.json, weights, tokenizer files); save it there where there is network "
                                f"(huggingface_hub.snapshot_download('{repo_id}', local_dir='{path}')) "
                                f"or --set {key}=DIR")
    return str(path)


class ResNetImageEncoder(nn.Module):
    def __init__(self, name: str, pretrained: str | None, load_pretrained: bool = True):
        super().__init__()
        self.resnet = getattr(torchvision.models, name)(weights=None)
        if pretrained and load_pretrained:
            if not Path(pretrained).is_file():
                raise FileNotFoundError(f"model.image.pretrained: ImageNet weights file not found: {pretrained} "
                                        f"(a torchvision {name} state dict; --set model.image.pretrained=FILE)")
            self.resnet.load_state_dict(read_state_dict_file(pretrained, "model.image.pretrained"))
        self.out_dim = self.resnet.fc.in_features
        self.resnet.fc = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.resnet(images)


def _hf_model(model_cls, config_cls, pretrained: str | None, overrides: dict[str, Any], load_pretrained: bool,
              key: str, what: str, repo: str):
    """A transformers model from a local folder (its weights, or only its config.json when a checkpoint will supply
    the weights), or from ``overrides`` alone when no folder is configured (tests)."""
    if not pretrained:
        return model_cls(config_cls(**overrides))
    path = local_hf_dir(pretrained, key, what, repo)
    if load_pretrained:
        return model_cls.from_pretrained(path, local_files_only=True)
    return model_cls(config_cls.from_pretrained(path, local_files_only=True))


class SwinImageEncoder(nn.Module):
    def __init__(self, pretrained: str | None, overrides: dict[str, Any], pooling: str, load_pretrained: bool = True):
        super().__init__()
        self.swin = _hf_model(SwinModel, SwinConfig, pretrained, overrides, load_pretrained,
                              "model.image.pretrained", "Swin", "microsoft/swin-tiny-patch4-window7-224")
        self.pooling = pooling
        self.out_dim = self.swin.config.hidden_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.swin(pixel_values=images)
        return out.last_hidden_state[:, 0] if self.pooling == "first_token" else out.pooler_output


class BertTextEncoder(nn.Module):
    def __init__(self, pretrained: str | None, overrides: dict[str, Any], pooling: str, load_pretrained: bool = True):
        super().__init__()
        self.bert = _hf_model(BertModel, BertConfig, pretrained, overrides, load_pretrained,
                              "model.text.pretrained", "BERT (Bio_ClinicalBERT)", "emilyalsentzer/Bio_ClinicalBERT")
        # Every pooling below reads the hidden states: BERT's pooler never gets a gradient. Frozen, so DDP does not
        # wait for one (it stopped torchrun at step 2); kept, so checkpoints keep the original's keys.
        if getattr(self.bert, "pooler", None) is not None:
            self.bert.pooler.requires_grad_(False)
        self.pooling = pooling
        self.out_dim = self.bert.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        last = attention_mask.sum(-1) - 1  # the [SEP] token closing each (right-padded) sequence
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def build_image_encoder(cfg: ImageEncoderConfig, load_pretrained: bool = True) -> nn.Module:
    if cfg.name == "swin":
        return SwinImageEncoder(cfg.pretrained, cfg.swin, cfg.swin_pooling, load_pretrained)
    return ResNetImageEncoder(cfg.name, cfg.pretrained, load_pretrained)


def _enable_activation_checkpointing(hf_model) -> None:
    """Non-reentrant checkpointing; transformers 5 renamed the method (the old one warns and goes in v6)."""
    if hasattr(hf_model, "activation_checkpointing_enable"):
        hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class CXRClip(nn.Module):
    def __init__(self, cfg: ModelConfig, load_pretrained: bool = True):
        """``load_pretrained=False``: the architecture only (weights to come from a CXR-CLIP checkpoint)."""
        super().__init__()
        self.image_encoder = build_image_encoder(cfg.image, load_pretrained)
        self.text_encoder = BertTextEncoder(cfg.text.pretrained, cfg.text.bert, cfg.text.pooling, load_pretrained)
        self.image_projection = nn.Linear(self.image_encoder.out_dim, cfg.projection_dim)
        self.text_projection = nn.Linear(self.text_encoder.out_dim, cfg.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        if cfg.grad_checkpointing:
            for hf_model in (self.text_encoder.bert, getattr(self.image_encoder, "swin", None)):
                if hf_model is not None:
                    _enable_activation_checkpointing(hf_model)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text_encoder(input_ids, attention_mask)), dim=-1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.logit_scale.exp()
