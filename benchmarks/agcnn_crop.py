"""Benchmark of the attention-guided crop: batched tensor path vs a per-sample NumPy/OpenCV loop, one run.

    python -m benchmarks --only agcnn_crop [-- --batch 64 [--size 224] [--channels 2048] [--device cpu|cuda] [--reps 5]
                                            [--threads N] [--labeler auto|tensor|scipy] [--crop-method roi_align|interpolate]]

Both paths go from the global branch's feature maps [B, K, 7, 7] (on the device) to crops [B, 3, 224, 224] (on
the device): heatmap max|f|, min-max, resize, threshold 0.7, largest 8-connected component, box, crop + resize.
The per-sample loop is what the seed repository does (device -> NumPy per image, OpenCV, back to a tensor).
Prints images/s of each and their ratio (batched / per-sample) measured in the same run, the batched path's split
into boxes (heat map ... largest component) and crop + resize, and checks that both give the same boxes.
``--labeler`` picks the connected-component labelling of the batched path (``auto``: scipy per image on a CPU
tensor, batched tensor ops on a GPU); ``--threads`` sets torch's and OpenCV's thread counts. The feature maps are random with one or two smooth hot spots per image (like real maps).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from agcnn.crop import attention_boxes, crop_and_resize, reference_boxes, reference_crops


def synthetic_features(batch: int, channels: int, fh: int = 7, fw: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(fh, dtype=torch.float32), torch.arange(fw, dtype=torch.float32),
                            indexing="ij")
    bumps = torch.zeros(batch, 1, fh, fw)
    for _ in range(2):
        cy = torch.rand(batch, 1, 1, 1, generator=g) * (fh - 1)
        cx = torch.rand(batch, 1, 1, 1, generator=g) * (fw - 1)
        s = 0.8 + 1.5 * torch.rand(batch, 1, 1, 1, generator=g)
        amp = 0.5 + torch.rand(batch, 1, 1, 1, generator=g)
        bumps = bumps + amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    noise = torch.randn(batch, channels, fh, fw, generator=g).relu()
    return noise * 0.3 + bumps * (1 + noise)


def batched(features: torch.Tensor, images: torch.Tensor, tau: float, out: int, labeler: str = "auto",
            method: str = "roi_align") -> tuple[torch.Tensor, torch.Tensor]:
    info = attention_boxes(features, images.shape[-2:], tau=tau, labeler=labeler)
    return crop_and_resize(images, info.boxes, out, method), info.boxes


def per_sample(features: torch.Tensor, images: torch.Tensor, tau: float, out: int) -> tuple[torch.Tensor, np.ndarray]:
    crops, boxes = [], []
    for f, img in zip(features, images):  # one image at a time, as the seed repository does
        box = reference_boxes(f[None].detach().cpu().numpy(), tuple(images.shape[-2:]), tau=tau)
        crop = reference_crops(img[None].detach().cpu().numpy(), box, out)
        crops.append(torch.from_numpy(crop).to(images.device))
        boxes.append(box[0])
    return torch.cat(crops), np.stack(boxes)


def _time(fns: dict, reps: int, sync) -> dict[str, float]:
    """Median seconds of each callable; the callables take turns within every repetition, so that a load
    change on a shared machine hits all of them alike and their ratio stays fair."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--tau", type=float, default=0.7)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: as set)")
    parser.add_argument("--labeler", default="auto", choices=["auto", "tensor", "scipy"])
    parser.add_argument("--crop-method", default="roi_align", choices=["roi_align", "interpolate"])
    parser.add_argument("--deterministic", action="store_true",
                        help="as training runs with engine.deterministic: true (use_deterministic_algorithms)")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(args.deterministic, warn_only=True)
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    feats = synthetic_features(args.batch, args.channels).to(device)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)

    run = lambda: batched(feats, images, args.tau, args.size, args.labeler, args.crop_method)  # noqa: E731
    _, boxes_b = run()  # warm-up (and correctness check)
    _, boxes_s = per_sample(feats, images, args.tau, args.size)
    agree = float((boxes_b.cpu().numpy() == boxes_s).all(1).mean())
    t = _time({"batched": run, "per_sample": lambda: per_sample(feats, images, args.tau, args.size),
               "boxes": lambda: attention_boxes(feats, images.shape[-2:], tau=args.tau, labeler=args.labeler),
               "crop": lambda: crop_and_resize(images, boxes_b, args.size, args.crop_method)}, args.reps, sync)
    t_b, t_s, t_boxes, t_crop = t["batched"], t["per_sample"], t["boxes"], t["crop"]
    res = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch, "size": args.size,
           "labeler": args.labeler, "crop_method": args.crop_method, "deterministic": args.deterministic,
           "batched_img_s": args.batch / t_b, "per_sample_img_s": args.batch / t_s, "ratio": t_s / t_b,
           "boxes_ms": 1e3 * t_boxes, "crop_ms": 1e3 * t_crop, "box_agreement": agree}
    print(f"attention crop, {args.batch} images {args.size}px, features [{args.channels}, 7, 7], device {device}, "
          f"{res['threads']} threads, labeler {args.labeler}, crop {args.crop_method}, "
          f"deterministic {args.deterministic}")
    print(f"  batched tensor ops      {res['batched_img_s']:10.1f} images/s   "
          f"(boxes {res['boxes_ms']:.1f} ms + crop {res['crop_ms']:.1f} ms per batch)")
    print(f"  per-sample NumPy/OpenCV {res['per_sample_img_s']:10.1f} images/s")
    print(f"  ratio batched / per-sample: {res['ratio']:.2f}x   (boxes identical for {agree:.0%} of images)")
    return res


if __name__ == "__main__":
    main()
