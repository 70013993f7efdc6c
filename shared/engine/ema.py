"""Exponential moving average of model weights."""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch

from .distributed import unwrap_model


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` over every floating-point entry of the state dict
    (parameters and buffers such as BatchNorm running stats); integer buffers are copied.

    ``ema.module`` is a frozen deep copy (eval mode) to evaluate with; ``update(model)`` after each optimizer step.
    """

    def __init__(self, model: torch.nn.Module, decay: float, device: torch.device | str | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        if device is not None:
            self.module.to(device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        src = unwrap_model(model).state_dict()
        for key, ema_v in self.module.state_dict().items():
            model_v = src[key].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(model_v.to(ema_v.dtype), alpha=1.0 - self.decay)
            else:
                ema_v.copy_(model_v)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Mapping) -> None:
        from .checkpoint import load_model_weights
        load_model_weights(self.module, state_dict, strict=True)
