"""Learning-rate schedules as ``LambdaLR`` (state_dict stays plain, so checkpoints load with weights_only)."""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, min_lr: float = 0.0,
                    warmup_steps: int = 0) -> LambdaLR:
    """Linear warmup then cosine decay to ``min_lr`` (absolute), stepped once per optimizer step (``"iter"``).

    Step ``s`` (0-based) uses ``base * (s + 1) / warmup_steps`` during warmup, then
    ``min_lr + (base - min_lr) * (1 + cos(pi * t)) / 2`` with ``t = (s - warmup) / (total - warmup)`` clamped to 1.
    Use ``total_steps = epochs * steps_per_epoch`` (optimizer steps, i.e. after grad accumulation).
    """
    if total_steps <= 0:
        raise ValueError(f"cosine_schedule: total_steps must be > 0, got {total_steps}")
    warmup_steps = max(0, int(warmup_steps))

    def make(base_lr: float):
        floor = (min_lr / base_lr) if base_lr > 0 else 0.0

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            span = max(1, total_steps - warmup_steps)
            t = min(1.0, (step - warmup_steps) / span)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        return factor

    return LambdaLR(optimizer, [make(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups])


def step_schedule(optimizer: torch.optim.Optimizer, step_epochs: int | Sequence[int], gamma: float = 0.1) -> LambdaLR:
    """Multiply the lr by ``gamma`` every ``step_epochs`` epochs (an int, StepLR semantics) or at each epoch in a
    list of milestones (MultiStepLR semantics). Step it once per epoch (``scheduler_interval="epoch"``)."""
    if isinstance(step_epochs, int):
        if step_epochs <= 0:
            raise ValueError(f"step_schedule: step_epochs must be > 0, got {step_epochs}")
        return LambdaLR(optimizer, lambda epoch: gamma ** (epoch // step_epochs))
    milestones = sorted(int(m) for m in step_epochs)
    return LambdaLR(optimizer, lambda epoch: gamma ** bisect.bisect_right(milestones, epoch))
