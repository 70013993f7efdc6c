"""CheXtriev: training-epoch time with vs without the frozen-CNN feature cache, as a ratio measured in one run.

    python -m benchmarks.chextriev_cache                 # paper setting: V6, ResNet50, 224 px crops, 48 images
    python -m benchmarks.chextriev_cache --quick         # tiny: resnet18, 64 px crops, narrow V6 (seconds)
    python -m benchmarks --only chextriev_cache -- --quick

Both epochs train the same model (V6: fully connected, abs_pos, fixed random edges, residual type 2), on the same
images, batch size and optimizer step (Adam, grad clip 0.5). "without" decodes each image, cuts its 18 anatomy
crops and runs the frozen CNN every step, as the original did; "with" reads the N x 18 x F float16 features of
``chextriev.data.build_feature_cache``, built once beforehand. The build time is printed separately: one CNN pass
over the data, paid once for every epoch and every variant that shares the backbone. The images are the
synthetic ImaGenome twin (320 px JPEGs); real MIMIC JPEGs (~2500 x 3000 px) decode far slower, so the real ratio
is larger. The twin and its prepared index are kept in ``--data`` (benchmarks/out/ by default) and reused.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
QUICK = dict(images=32, backbone="resnet18", crop_size=64, dim=128, heads=4, dim_head=32, image_px=128)


def _epoch(model, loader, optimizer, device) -> float:
    import torch

    from chextriev.losses import compute_loss

    model.train()
    t0 = time.perf_counter()
    for batch in loader:
        out = model(batch["x"].to(device))
        targets = {k: batch[k].to(device) for k in ("labels", "node_labels")}
        loss, _ = compute_loss("graph_transformer", out, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _prepared_twin(data: Path, n: int, image_px: int):
    from shared.data import synthetic

    from chextriev.prepare import Prepared, prepare

    twin = data / f"imagenome{image_px}_n{n}"
    prepared = data / f"imagenome{image_px}_n{n}_chextriev"
    if not synthetic.is_complete(twin, "imagenome", n, image_px, 0):
        synthetic.generate("imagenome", twin, n=n, size=image_px, seed=0)
        shutil.rmtree(prepared, ignore_errors=True)
    if not (prepared / "meta.json").exists():
        prepare(twin, twin, prepared, workers=2)
    return Prepared(prepared)


def run(images: int = 48, backbone: str = "resnet50", crop_size: int = 224, dim: int = 1024, heads: int = 8,
        dim_head: int = 64, batch_size: int = 16, workers: int = 0, device: str = "auto", image_px: int = 320,
        data: Path = DEFAULT_OUT / "chextriev_cache") -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset

    from chextriev.data import AnatomyDataset, CachedDataset, build_feature_cache
    from chextriev.models import ModelConfig, build_model

    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    data = Path(data)
    prep = _prepared_twin(data, int(images * 1.5) + 8, image_px)       # ~2/3 of the twin is kept and split
    rows = list(range(min(images, len(prep.frame))))
    torch.manual_seed(0)
    cfg = ModelConfig(name="graph_transformer", backbone=backbone, pretrained=False, dim=dim, heads=heads,
                      dim_head=dim_head, abs_pos=True, edges="fixed_random", residual_type=2)
    model = build_model(cfg).to(dev)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    crops = AnatomyDataset(prep.frame, prep.boxes, prep.labels, rows, "crops", crop_size)

    def loader(ds):
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)

    _epoch(model, loader(Subset(crops, rows[:batch_size])), opt, dev)          # warm-up
    t_crops = _epoch(model, loader(crops), opt, dev)
    cache_dir = data / "cache.run"
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    cache = build_feature_cache(model.encoder.cnn, crops, cache_dir, batch_size, workers, dev)
    t_build = time.perf_counter() - t0
    cached = CachedDataset(crops, cache)
    _epoch(model, loader(Subset(cached, rows[:batch_size])), opt, dev)          # warm-up
    t_cached = _epoch(model, loader(cached), opt, dev)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {"images": len(rows), "backbone": backbone, "crop_size": crop_size, "dim": dim, "device": str(dev),
            "threads": torch.get_num_threads(), "batch_size": batch_size, "workers": workers,
            "epoch_s_without_cache": t_crops, "epoch_s_with_cache": t_cached, "cache_build_s": t_build,
            "speedup": t_crops / t_cached}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chextriev_cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=str(DEFAULT_OUT / "chextriev_cache"), help="twin, prepared index, cache")
    p.add_argument("--quick", action="store_true", help="resnet18, 64 px crops, dim 128, 32 images")
    a = p.parse_args(argv)
    kw = dict(images=a.images, backbone=a.backbone, crop_size=a.crop_size, batch_size=a.batch_size,
              workers=a.workers, device=a.device, data=Path(a.data))
    if a.quick:
        kw.update(QUICK)
    res = run(**kw)
    print(f"CheXtriev V6 training epoch over {res['images']} images ({res['backbone']}, {res['crop_size']} px "
          f"crops, {res['device']}, {res['threads']} threads): without cache {res['epoch_s_without_cache']:.2f} s, "
          f"with cache {res['epoch_s_with_cache']:.2f} s -> with/without speed-up x{res['speedup']:.1f} "
          f"(one-time cache build {res['cache_build_s']:.2f} s)")
    out = Path(a.data) / "chextriev_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
