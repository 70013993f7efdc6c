"""AG-CNN on your own chest X-ray: fusion-branch findings, global/local/fusion probabilities, the attention crop.

    python -m agcnn.predict cxr.png scan.dcm --run runs/agcnn/nih_resnet50/<ts> [--out predictions] [--json]
    python -m agcnn.predict cxr.png -cfg agcnn/configs/nih_resnet50.yaml --weights model.pt

The image goes through AG-CNN's test transform (resize to resize x resize, aspect not kept; centre crop
image_size; ImageNet normalisation). The findings table is the fusion branch (what the paper reports); the JSON
adds ``global`` / ``local`` probabilities, the crop ``box`` (x0, y0, x1, y1 as fractions of your image's width and
height), ``tau`` and ``fallback`` (no attended region: the whole image was used). OUT/<image>_agcnn.png shows the
attention heat map (max over channels of |global features|, min-max scaled), the tau mask (the kept largest
component) and the crop box, and the local branch's input crop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd agcnn && python predict.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import cv2
import numpy as np
import torch

from shared import predict as common
from shared.config import load_config
from shared.data.images import to_rgb
from shared.data.transforms import denormalize
from shared.engine import load_checkpoint, load_model_weights, weights_from_checkpoint

from agcnn.config import Config
from agcnn.data import eval_transform, label_columns
from agcnn.train import build_model, final_checkpoint


def load_agcnn_weights(model: torch.nn.Module, path: Path) -> None:
    """The one place predict loads weights (our shared.engine checkpoints, EMA preferred as agcnn.test does)."""
    load_model_weights(model, weights_from_checkpoint(load_checkpoint(path, map_location="cpu"), prefer_ema=True))


def branch_outputs(model, x: torch.Tensor) -> dict:
    """Every branch's probabilities and the crop of one image (the steps of AGCNN.forward, keeping the mask)."""
    g = model.global_branch(x)
    crops, info = model.crop(x, g.features)
    loc = model.local_branch(crops)
    fusion = model.fusion(torch.cat([g.pooled, loc.pooled], dim=1))
    prob = lambda logits: torch.sigmoid(logits[0].float()).cpu().numpy()  # noqa: E731
    return {"global": prob(g.logits), "local": prob(loc.logits), "fusion": prob(fusion), "crop": crops[0].cpu(),
            "heat": info.heat[0].cpu().numpy(), "mask": info.mask[0].cpu().numpy(),
            "box": info.boxes[0].tolist(), "fallback": bool(info.fallback[0])}


def load(args: argparse.Namespace) -> common.Predictor:
    files = common.resolve_run(args.run, args.weights, args.config, checkpoint_in_run=lambda run: final_checkpoint(
        run, load_config(Config, run / "config.yaml")))
    cfg = load_config(Config, files.config, args.overrides)
    cfg.model.pretrained, cfg.model.pretrained_path = False, None   # every weight comes from the checkpoint
    cfg.model.seed_fusion_fc = None
    classes = label_columns(cfg.model.num_classes)
    model = build_model(cfg)
    load_agcnn_weights(model, files.weights)
    device = torch.device(args.device)
    model.to(device).eval()
    transform = eval_transform(cfg.data)
    side = cfg.data.image_size

    @torch.no_grad()
    def predict(gray: np.ndarray) -> common.Evidence:
        out = branch_outputs(model, transform(to_rgb(gray)).unsqueeze(0).to(device))
        size = common.panel_size(gray.shape)
        x0, y0, x1, y1 = common.crop_window(gray.shape, cfg.data.resize, side, squash=True)
        sx, sy = (x1 - x0) / side, (y1 - y0) / side
        bx0, by0, bx1, by1 = out["box"]                 # inclusive input pixels -> fractions of the image
        box = [x0 + bx0 * sx, y0 + by0 * sy, x0 + (bx1 + 1) * sx, y0 + (by1 + 1) * sy]
        heat = common.draw_box(common.heat_overlay(gray, out["heat"], size, (x0, y0, x1, y1)), box)
        mask = common.draw_box(common.heat_overlay(gray, out["mask"].astype(np.float32), size, (x0, y0, x1, y1),
                                                   alpha=0.3), box)
        crop = (denormalize(out["crop"]).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        crop = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        threshold = "Otsu" if cfg.model.threshold == "otsu" else f"tau={cfg.model.tau:g}"
        panels = [(heat, "attention heat map + crop box"), (mask, f"mask ({threshold}, largest component)"),
                  (crop, "local branch input (crop)")]
        per_branch = {b: {c: round(float(p), 6) for c, p in zip(classes, out[b])} for b in ("global", "local")}
        extra = {**per_branch, "box": [round(v, 4) for v in box], "tau": cfg.model.tau,
                 "threshold": cfg.model.threshold, "fallback": out["fallback"]}
        return common.Evidence({c: float(p) for c, p in zip(classes, out["fusion"])}, panels, extra)

    return common.Predictor("agcnn", predict, side)


def main(argv=None) -> int:
    return common.main("agcnn", __doc__, load, argv)


if __name__ == "__main__":
    sys.exit(main())
