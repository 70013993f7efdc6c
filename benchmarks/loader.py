"""Training-loader throughput: 1024-px PNGs vs prepared (resized) PNGs vs the pre-decoded cache.

    python -m benchmarks.loader [--n 300] [--size 1024] [--workers CORES] [--epochs 2] [--data benchmarks/out]

On a synthetic NIH twin written at 1024 px (generated once, reused), with the same training transform for every
variant (RandomResizedCrop 224 + horizontal flip + ToTensor + ImageNet Normalize, batch 32, all cores as DataLoader
workers, shuffled), it measures images/s of:

  (a) png1024   the 1024-px PNGs as downloaded (decode 1024 px every time)
  (b) png512    ``prepare --size 512`` PNGs          (b') png256  ``prepare --size 256``
  (c) cache512  ``prepare --size 512 --cache``: the ImageCache memmap (no decoding at all)   (c') cache256

and prints each as a ratio against (a), all measured in this one run. One untimed warm-up epoch per variant first
(worker start-up, page cache), then ``--epochs`` timed epochs with persistent workers. Results also go to
``<data>/loader.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def train_transform():
    from torchvision import transforms as T
    from shared.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def measure(frame, labels, cache, workers, batch, epochs) -> float:
    """Images per second of a shuffled training DataLoader over ``frame`` (after one untimed epoch)."""
    import torch
    from shared.data.dataset import ImageDataset
    ds = ImageDataset(frame, labels, transform=train_transform(), cache=cache)
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, drop_last=False, generator=g)
    for _ in loader:          # warm-up: workers start, files enter the page cache
        pass
    n = 0
    t = time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            n += b["image"].shape[0]
    dt = time.perf_counter() - t
    del loader
    return n / dt


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="images in the synthetic twin")
    p.add_argument("--size", type=int, default=1024, help="side of the 'original' images")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (default: cores)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    p.add_argument("--data", default=str(DEFAULT_OUT), help="where the twin, prepared copies and caches go")
    p.add_argument("--variants", nargs="*", default=["png1024", "png512", "png256", "cache512", "cache256"])
    a = p.parse_args(argv)

    from shared.data import nih, synthetic
    from shared.data.cache import ImageCache
    from shared.data.prepare import prepare

    data = Path(a.data)
    twin = data / f"nih{a.size}_n{a.n}"
    t0 = time.perf_counter()
    if not synthetic.is_complete(twin, "nih", a.n, a.size, 0):
        print(f"generating the synthetic NIH twin: {a.n} images at {a.size} px -> {twin}", flush=True)
        synthetic.generate("nih", twin, n=a.n, size=a.size, seed=0, workers=os.cpu_count() or 1)
    frames = {"png1024": nih.read_index(twin)}
    caches = {}
    for s in (512, 256):
        if f"png{s}" in a.variants or f"cache{s}" in a.variants:
            out = data / f"nih{a.size}_n{a.n}_prep{s}"
            want_cache = f"cache{s}" in a.variants
            prepare("nih", twin, out, size=s, mode="square", cache=want_cache, progress=False)
            frames[f"png{s}"] = nih.read_index(out)
            if want_cache:
                caches[f"cache{s}"] = (ImageCache.open(out / "cache"), frames[f"png{s}"])
    print(f"setup {time.perf_counter() - t0:.0f} s; measuring with {a.workers} workers, batch {a.batch}, "
          f"{a.epochs} epochs of {a.n} images", flush=True)

    labels = frames["png1024"].attrs["label_columns"]
    rates = {}
    for v in a.variants:
        if v.startswith("png"):
            rates[v] = measure(frames[v], labels, None, a.workers, a.batch, a.epochs)
        else:
            cache, frame = caches[v]
            rates[v] = measure(frame, labels, cache, a.workers, a.batch, a.epochs)
        print(f"  {v:9s} {rates[v]:8.1f} img/s", flush=True)
    base = rates.get("png1024")
    print(f"\nloader throughput vs (a) 1024-px PNGs ({a.workers} workers, RandomResizedCrop 224 + flip + "
          f"normalize, batch {a.batch}):")
    print("| variant | img/s | vs png1024 |\n|---|---|---|")
    for v, r in rates.items():
        print(f"| {v} | {r:.1f} | {r / base:.2f}x |" if base else f"| {v} | {r:.1f} | - |")
    result = {"n": a.n, "size": a.size, "workers": a.workers, "batch": a.batch, "epochs": a.epochs,
              "cpu_count": os.cpu_count(), "images_per_s": rates,
              "ratio_vs_png1024": {v: r / base for v, r in rates.items()} if base else None}
    data.mkdir(parents=True, exist_ok=True)
    (data / "loader.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
