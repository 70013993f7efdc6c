"""Estimate the GPU memory of one ADNet training step from a CPU measurement (no GPU needed).

    python -m adnet.memory                       # every reproduce config
    python -m adnet.memory --configs nih_convnext --images 1

What it measures, on the CPU, for one training forward of ``--images`` images at the config's train size under
autocast (CPU bf16: the same 2 bytes per element as the fp16 the published runs used on the GPU): the bytes of
every tensor autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``, each storage
counted once, the parameters themselves excluded — the low-precision copies autocast makes of them are counted).
From that it derives, for the published batch:

    activations = batch x saved bytes per image
    states      = parameters x 20 B (fp32 weights 4 + gradients 4 + AdamW moments 8 + EMA copy 4)
    estimate    = activations x [1.0, 1.3] + states      (1.3: gradients of activations alive during the
                  backward, the allocator's rounding and cuDNN workspaces; the CUDA context, ~0.5 GiB, is extra)

It is an estimate, not a GPU measurement: ``python -m benchmarks.train_step --methods adnet`` measures the real
peak on a CUDA machine. On CPU, attention runs the same memory-efficient kernel family (no N x M attention matrix
kept), so the decoder's saved tensors match what flash / memory-efficient attention keeps on the GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd adnet && python memory.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import torch
import torch.nn.functional as F

from shared.config import load_config

from adnet.config import ADNetConfig
from adnet.data import label_names
from adnet.evaluate import build_from_config

GIB = 1024 ** 3
CONFIGS = Path(__file__).resolve().parent / "configs"
STATE_BYTES_PER_PARAM = 4 + 4 + 8 + 4     # weights, gradients, AdamW exp_avg + exp_avg_sq, EMA copy (all fp32)
OVERHEAD = (1.0, 1.3)


def saved_bytes_per_image(model: torch.nn.Module, size: int, classes: int, images: int = 2) -> float:
    """Bytes autograd keeps for the backward of one training forward, per image (autocast bf16 on CPU)."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    model.train()
    x = torch.randn(images, 3, size, size)
    y = (torch.rand(images, classes) < 0.3).float()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
    del loss
    return sum(seen.values()) / images


def estimate(config: Path, images: int = 2) -> dict:
    cfg = load_config(ADNetConfig, config)
    classes = len(label_names(cfg.data))
    model, _ = build_from_config(cfg, classes, load_pretrained=False)
    params = sum(p.numel() for p in model.parameters())
    per_image = saved_bytes_per_image(model, cfg.data.train_size, classes, images)
    acts = per_image * cfg.data.batch_size
    states = params * STATE_BYTES_PER_PARAM
    low, high = (acts * f + states for f in OVERHEAD)
    return {"config": config.stem, "model": cfg.model.name, "batch": cfg.data.batch_size, "size": cfg.data.train_size,
            "params_m": params / 1e6, "saved_mib_per_image": per_image / 2 ** 20, "activations_gib": acts / GIB,
            "states_gib": states / GIB, "estimate_gib": (low / GIB, high / GIB)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adnet.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=None, help="config names (default: every reproduce config)")
    parser.add_argument("--images", type=int, default=2, help="images in the measured forward (>= 2: BatchNorm)")
    args = parser.parse_args(argv)
    names = args.configs or sorted(p.stem for p in CONFIGS.glob("*.yaml")
                                   if p.stem not in ("base", "demo") and not p.stem.startswith("_"))
    print("| config | model | batch x train px | params M | saved MiB / image | activations GiB | "
          "weights+grads+AdamW+EMA GiB | estimated peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        r = estimate(CONFIGS / f"{name}.yaml", args.images)
        lo, hi = r["estimate_gib"]
        print(f"| {r['config']} | {r['model']} | {r['batch']} x {r['size']} | {r['params_m']:.2f} | "
              f"{r['saved_mib_per_image']:.0f} | {r['activations_gib']:.1f} | {r['states_gib']:.2f} | "
              f"{lo:.1f}-{hi:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
