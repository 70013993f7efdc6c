"""HAM on your own chest X-ray: findings with probabilities, the anomaly score and HAM's attention maps.

    python -m ham.predict cxr.png scan.dcm --run runs/ham/nih_cls_fold1/<ts> [--out predictions] [--json]
    python -m ham.predict cxr.png -cfg ham/configs/nih_loc_fold1.yaml --weights model.pt

The image goes through HAM's test transform (resized to img_size x img_size, bilinear, aspect not kept, 0.5/0.5
normalisation). Evidence: the anomaly attention (the CAM of the anomaly head) and the disease attention of the top
``--top`` findings (the CAMs of the disease head), each min-max normalised over the image as ham.visual shows them.
Writes OUT/<image>_ham.png; the JSON adds ``anomaly`` (the probability that the image is abnormal).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd ham && python predict.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch
import torchvision.transforms.v2 as T

from shared import predict as common
from shared.config import load_config
from shared.data.images import to_rgb
from shared.data.transforms import HALF_MEAN, HALF_STD

from ham.checkpoint import load_weights
from ham.config import HAMConfig, ModelConfig, build_model
from ham.data import class_names


def load_ham_weights(model: torch.nn.Module, path: Path) -> None:
    """The one place predict loads weights: ours or the authors' released .pth (ham.checkpoint, strict)."""
    load_weights(model, path)


def test_transform(size: int) -> T.Compose:
    """HAM's evaluation transform (ham.data.HAMDataset with train=False)."""
    return T.Compose([T.Resize([size, size], interpolation=T.InterpolationMode.BILINEAR), T.ToImage(),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(HALF_MEAN, HALF_STD)])


def load(args: argparse.Namespace) -> common.Predictor:
    files = common.resolve_run(args.run, args.weights, args.config)
    cfg = load_config(HAMConfig, files.config, args.overrides)
    classes = class_names(cfg.data)
    # every weight comes from the checkpoint: no ImageNet file or download
    model = build_model(ModelConfig(**{**cfg.model.__dict__, "pretrained": False, "pretrained_path": None}),
                        len(classes))
    load_ham_weights(model, files.weights)
    device = torch.device(args.device)
    model.to(device).eval()
    transform = test_transform(cfg.data.img_size)

    @torch.no_grad()
    def predict(gray: np.ndarray) -> common.Evidence:
        out = model(transform(to_rgb(gray)).unsqueeze(0).to(device), refine=False)
        probs = torch.sigmoid(out.logit_cls[0].float()).cpu().numpy()
        anomaly = float(torch.sigmoid(out.logit_ano[0, 0].float()))
        top = [int(k) for k in np.argsort(-probs, kind="stable")[:args.top]]
        size = common.panel_size(gray.shape)
        cams = lambda raw: common.normalise_map(raw.float().cpu().numpy())  # noqa: E731
        panels = [(common.gray_rgb(gray, size), "input"),
                  (common.heat_overlay(gray, cams(out.raw_ano[0, 0]), size), f"anomaly attention p={anomaly:.2f}")]
        panels += [(common.heat_overlay(gray, cams(out.raw_cls[0, k]), size),
                    f"disease attention {classes[k]} p={probs[k]:.2f}") for k in top]
        return common.Evidence({c: float(p) for c, p in zip(classes, probs)}, panels,
                               {"anomaly": round(anomaly, 6)})

    return common.Predictor("ham", predict, cfg.data.img_size)


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top", type=int, default=2, help="disease attention panels for the N most probable findings")


def main(argv=None) -> int:
    return common.main("ham", __doc__, load, argv, extra_args)


if __name__ == "__main__":
    sys.exit(main())
