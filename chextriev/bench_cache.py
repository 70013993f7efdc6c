"""Epoch time of CheXtriev training with and without the frozen-CNN feature cache, measured in one run.

    python -m chextriev.bench_cache                 # paper setting: V6, ResNet50, 224 px crops, 48 images
    python -m chextriev.bench_cache --quick         # tiny: resnet18, 64 px crops, narrow V6 (seconds on a CPU)
    python -m chextriev.bench_cache --json out.json

Both epochs run the same model (V6), data, batch size and optimizer step; "without" decodes the images, cuts the
18 crops and runs the frozen CNN every step (as the original did), "with" reads N x 18 x F float16 features
from the cache built once beforehand (its build time is reported separately: it is one pass of the CNN over the
data, paid once for all epochs and all variants sharing the backbone). The data are the synthetic twin (small
PNG-like JPEGs); real MIMIC JPEGs (~2500 x 3000) are far slower to decode, so the real ratio is larger.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader

from shared.data.synthetic import generate

from chextriev.data import AnatomyDataset, CachedDataset, build_feature_cache
from chextriev.losses import compute_loss
from chextriev.models import ModelConfig, build_model
from chextriev.prepare import Prepared, prepare


def _epoch(model, loader, optimizer, device) -> float:
    model.train()
    t0 = time.perf_counter()
    for batch in loader:
        out = model(batch["x"].to(device))
        loss, _ = compute_loss("graph_transformer", out, {k: v.to(device) for k, v in batch.items()
                                                          if k in ("labels", "node_labels")})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run(images: int = 48, backbone: str = "resnet50", crop_size: int = 224, dim: int = 1024, heads: int = 8,
        dim_head: int = 64, batch_size: int = 16, workers: int = 0, device: str = "auto",
        image_px: int = 320, data_dir: Optional[str] = None) -> dict:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(data_dir) if data_dir else Path(tmp)
        twin = root / "imagenome_twin"
        generate("imagenome", twin, n=int(images * 1.5) + 8, size=image_px, seed=0)
        prep = Prepared(prepare(twin, twin, root / "prepared", workers=2))
        rows = list(range(min(images, len(prep.frame))))
        torch.manual_seed(0)
        cfg = ModelConfig(name="graph_transformer", backbone=backbone, dim=dim, heads=heads, dim_head=dim_head,
                          abs_pos=True, edges="fixed_random", residual_type=2)
        model = build_model(cfg).to(dev)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        crops = AnatomyDataset(prep.frame, prep.boxes, prep.labels, rows, "crops", crop_size)

        def loader(ds):
            return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)

        _epoch(model, loader(torch.utils.data.Subset(crops, rows[:batch_size])), opt, dev)       # warm-up
        t_crops = _epoch(model, loader(crops), opt, dev)
        t0 = time.perf_counter()
        cache = build_feature_cache(model.encoder.cnn, crops, root / "cache", batch_size, workers, dev)
        t_build = time.perf_counter() - t0
        cached = CachedDataset(crops, cache)
        _epoch(model, loader(torch.utils.data.Subset(cached, rows[:batch_size])), opt, dev)      # warm-up
        t_cached = _epoch(model, loader(cached), opt, dev)
    return {"images": len(rows), "backbone": backbone, "crop_size": crop_size, "dim": dim, "device": str(dev),
            "batch_size": batch_size, "epoch_s_without_cache": t_crops, "epoch_s_with_cache": t_cached,
            "cache_build_s": t_build, "speedup": t_crops / t_cached,
            "threads": torch.get_num_threads()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="resnet18, 64 px crops, dim 128, 32 images")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    kw = dict(images=args.images, backbone=args.backbone, crop_size=args.crop_size, batch_size=args.batch_size,
              workers=args.workers, device=args.device)
    if args.quick:
        kw.update(images=32, backbone="resnet18", crop_size=64, dim=128, heads=4, dim_head=32, image_px=128)
    res = run(**kw)
    print(f"CheXtriev V6 epoch over {res['images']} images ({res['backbone']}, {res['crop_size']} px crops, "
          f"{res['device']}, {res['threads']} threads): without cache {res['epoch_s_without_cache']:.2f} s, "
          f"with cache {res['epoch_s_with_cache']:.2f} s -> speed-up x{res['speedup']:.1f} "
          f"(one-time cache build {res['cache_build_s']:.2f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
