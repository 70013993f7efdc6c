"""``EngineConfig``: the ``engine:`` section of every method's YAML config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class EngineConfig:
    """Training-loop settings shared by all methods (nested as ``engine:`` in each method config)."""

    epochs: int = 1
    max_iters: int = 0            # >0: stop after this many optimizer steps in total (whichever comes first with epochs)
    amp: Literal["none", "bf16", "fp16"] = "none"   # fp16 on CPU falls back to none with a warning
    grad_accum: int = 1           # micro-batches per optimizer step
    clip_grad_norm: float = 0.0   # 0 = off
    ema_decay: float = 0.0        # 0 = off; EMA updated after every optimizer step
    ema_select: Literal["ema", "raw", "best"] = "ema"  # with EMA: whose metrics compete for best.pt ("best": either)
    seed: int = 42
    device: str = "auto"          # auto -> cuda (cuda:LOCAL_RANK under torchrun) if available else cpu
    val_every_iters: int = 0      # 0 = validate at the end of each epoch
    ckpt_every_iters: int = 0     # also write last.pt every N optimizer steps; 0 = end of epoch only
    monitor: str = "val/loss"     # metric name (as returned by evaluate()) that selects best.pt
    monitor_mode: Literal["max", "min"] = "min"
    log_every: int = 20           # optimizer steps per train log event
    num_workers: int = 4          # DataLoader workers used by Trainer.make_loader
    early_stop_patience: int = 0  # validations without improvement before stopping; 0 = off
    tensorboard: bool = False     # run_dir/tensorboard via torch.utils.tensorboard, when installed
    visdom: bool = False          # optional; never blocks when no server runs
    deterministic: bool = True    # torch.use_deterministic_algorithms(warn_only) + cudnn.deterministic

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 0, "max_iters": self.max_iters >= 0, "grad_accum": self.grad_accum >= 1,
            "clip_grad_norm": self.clip_grad_norm >= 0, "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "val_every_iters": self.val_every_iters >= 0, "ckpt_every_iters": self.ckpt_every_iters >= 0,
            "log_every": self.log_every >= 1, "num_workers": self.num_workers >= 0,
            "early_stop_patience": self.early_stop_patience >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("EngineConfig: invalid value for " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"EngineConfig: amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.ema_select not in ("ema", "raw", "best"):
            raise ValueError(f"EngineConfig: ema_select must be ema, raw or best, got {self.ema_select!r}")
        if self.monitor_mode not in ("max", "min"):
            raise ValueError(f"EngineConfig: monitor_mode must be max or min, got {self.monitor_mode!r}")
