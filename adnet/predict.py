"""ADNet on your own chest X-ray: findings with probabilities and a Grad-CAM picture of the top findings.

    python -m adnet.predict cxr.png scan.dcm --run runs/adnet/nih_convnext/<ts> [--out predictions] [--json]
    python -m adnet.predict cxr.png -cfg adnet/configs/nih_convnext.yaml --weights convnext_tiny_ADNet_IN1K_NIH.pth.tar

The image goes through the setting's test transform (shorter side to floor(test_size / crop_pct), bicubic,
centre crop test_size, ImageNet normalisation). Evidence: Grad-CAM on the decoder output ``fc_layer`` (the
stride-8 map the harmonic magnitude transform pools; the DFT magnitude in between is not linear, so plain CAM
through the classifier does not apply): ReLU of the map weighted by the spatially averaged gradient of the
finding's logit, for the top ``--top`` findings. Writes OUT/<image>_adnet.png (one panel per finding).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd adnet && python predict.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch

from shared import predict as common
from shared.config import load_config
from shared.data.images import to_rgb
from shared.data.transforms import resize_size

from adnet.checkpoint import load_weights
from adnet.config import ADNetConfig
from adnet.data import eval_transform, label_names
from adnet.evaluate import build_from_config, checkpoint_variants, pick_variant


def load_adnet_weights(model: torch.nn.Module, path: Path) -> list[str]:
    """The one place predict loads weights: ours (best.pt's selected raw/EMA) or the authors' .pth.tar."""
    variants, best_source = checkpoint_variants(path)
    variant = pick_variant(variants, best_source)
    return load_weights(model, variants[variant], source_name=f"{path} ({variant})")


def grad_cam(model, x: torch.Tensor, top: int) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """(sigmoid probabilities (K,), the ``top`` most probable classes, [Grad-CAM map (h, w) in [0, 1] of each])
    for one image, from one forward pass."""
    with torch.enable_grad():
        parts = model.forward_parts(x)
        fmap = parts["fc_layer"]
        logits = parts["logits"][0]
        probs = torch.sigmoid(logits.detach().float()).cpu().numpy()
        classes = [int(k) for k in np.argsort(-probs, kind="stable")[:top]]
        maps = []
        for k in classes:
            grad, = torch.autograd.grad(logits[k], fmap, retain_graph=True)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            maps.append(common.normalise_map(torch.relu((weights * fmap).sum(1))[0].detach().cpu().numpy()))
    return probs, classes, maps


def load(args: argparse.Namespace) -> common.Predictor:
    files = common.resolve_run(args.run, args.weights, args.config)
    cfg = load_config(ADNetConfig, files.config, args.overrides)
    labels = label_names(cfg.data)
    model, _ = build_from_config(cfg, len(labels), load_pretrained=False)
    notes = load_adnet_weights(model, files.weights)
    device = torch.device(args.device)
    model.to(device).eval()
    transform = eval_transform(cfg.data)
    window_args = (resize_size(cfg.data.test_size, cfg.data.crop_pct), cfg.data.test_size, False)

    def predict(gray: np.ndarray) -> common.Evidence:
        x = transform(to_rgb(gray)).unsqueeze(0).to(device)
        probs, top, maps = grad_cam(model, x, args.top)
        size = common.panel_size(gray.shape)
        window = common.crop_window(gray.shape, *window_args)
        panels = [(common.gray_rgb(gray, size), "input")]
        panels += [(common.heat_overlay(gray, m, size, window), f"Grad-CAM {labels[k]} p={probs[k]:.2f}")
                   for k, m in zip(top, maps)]
        return common.Evidence({name: float(p) for name, p in zip(labels, probs)}, panels,
                               {"evidence": f"Grad-CAM on fc_layer of the top {len(top)} findings"})

    return common.Predictor("adnet", predict, cfg.data.test_size, notes=[n for n in notes if n])


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top", type=int, default=3, help="Grad-CAM panels for the N most probable findings")


def main(argv=None) -> int:
    return common.main("adnet", __doc__, load, argv, extra_args)


if __name__ == "__main__":
    sys.exit(main())
