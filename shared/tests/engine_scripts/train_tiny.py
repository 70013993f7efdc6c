"""Tiny CPU training run used by the engine tests (subprocess, torchrun and in-process).

    python train_tiny.py RUN_DIR [--epochs 2] [--batch 8] [--accum 1] [--ckpt-every 0] [--kill-at-batch N]
                                 [--workers 0] [--ema 0.0] [--max-iters 0] [--sleep 0] [--samples 64] [--dropout 0.2]
Prints one JSON line ``{"best": ..., "global_step": ...}`` at the end (rank 0).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # repo root, so `shared` imports without install

from shared.engine import (EngineConfig, Trainer, all_gather_concat, cosine_schedule, is_main_process,  # noqa: E402
                           seed_everything)


class NoisyDataset(Dataset):
    """Fixed random inputs/targets; __getitem__ adds random noise (an 'augmentation' using the global RNG)."""

    def __init__(self, n: int = 64, dim: int = 6, seed: int = 0, noise: float = 0.1):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, 1, generator=g)
        self.y = self.x @ w + 0.05 * torch.randn(n, 1, generator=g)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"x": self.x[i] + self.noise * torch.randn_like(self.x[i]), "y": self.y[i], "index": i}


def make_model(dim: int = 6, dropout: float = 0.2, bn: bool = False) -> nn.Module:
    if bn:   # BatchNorm: running statistics that each DDP rank updates from its own batches
        return nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1))
    return nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def loss_fn(model, batch):
    pred = model(batch["x"])
    loss = nn.functional.mse_loss(pred, batch["y"])
    return loss, {"mse": loss.item()}


def sharded_evaluate(trainer: Trainer, val_set: Dataset):
    """The way methods evaluate: a train=False loader (each rank a disjoint shard), predictions gathered."""
    loader = trainer.make_loader(val_set, batch_size=5, shuffle=False, train=False)

    def evaluate(model):
        err, index = [], []
        for batch in loader:
            err.append((model(batch["x"]) - batch["y"]) ** 2)
            index.append(batch["index"])
        index = all_gather_concat(torch.cat(index))
        assert sorted(index.tolist()) == list(range(len(val_set))), index   # every sample exactly once
        return {"val/loss": float(all_gather_concat(torch.cat(err)).double().mean())}
    return evaluate


def make_evaluate(val_set: Dataset):
    def evaluate(model):
        x, y = val_set.x, val_set.y
        err = (model(x) - y) ** 2
        err = all_gather_concat(err)
        return {"val/loss": float(err.mean()), "val/neg": -float(err.mean())}
    return evaluate


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--val-every", type=int, default=0)
    p.add_argument("--kill-at-batch", type=int, default=0, help="SIGKILL itself at this (1-based) micro-batch")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--max-iters", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--bn", action="store_true", help="BatchNorm model, sharded evaluation of 37 samples")
    args = p.parse_args(argv)

    cfg = EngineConfig(epochs=args.epochs, grad_accum=args.accum, ckpt_every_iters=args.ckpt_every,
                       val_every_iters=args.val_every, num_workers=args.workers, ema_decay=args.ema,
                       max_iters=args.max_iters, device="cpu", log_every=2, seed=3)
    seed_everything(cfg.seed)
    model = make_model(dropout=args.dropout, bn=args.bn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    calls = {"n": 0}

    def counting_loss(model, batch):
        calls["n"] += 1
        if args.kill_at_batch and calls["n"] == args.kill_at_batch:
            os.kill(os.getpid(), signal.SIGKILL)
        if args.sleep:
            time.sleep(args.sleep)
        return loss_fn(model, batch)

    trainer = Trainer(model, opt, cfg, args.run_dir, loss_fn=counting_loss,
                      evaluate=make_evaluate(NoisyDataset(32, seed=1, noise=0.0)), config={"tiny": vars(args)})
    if args.bn:
        trainer.evaluate = sharded_evaluate(trainer, NoisyDataset(37, seed=1, noise=0.0))
    loader = trainer.make_loader(NoisyDataset(args.samples, seed=0), batch_size=args.batch, shuffle=True, drop_last=True)
    steps_per_epoch = len(loader) // args.accum
    trainer.scheduler = cosine_schedule(opt, total_steps=max(1, args.epochs * steps_per_epoch), min_lr=1e-4,
                                        warmup_steps=2)
    best = trainer.fit(loader)
    if trainer.world_size > 1:  # all_gather_concat with uneven first dims: rank r contributes r + 1 rows
        rank = trainer.rank
        gathered = all_gather_concat(torch.full((rank + 1, 2), float(rank)))
        expected = torch.cat([torch.full((r + 1, 2), float(r)) for r in range(trainer.world_size)])
        assert torch.equal(gathered, expected), gathered
    out = {"best": best, "global_step": trainer.global_step, "epoch": trainer.epoch}
    if is_main_process():
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
