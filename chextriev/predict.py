"""CheXtriev on your own chest X-ray: its 9 findings and the most similar images of an index, with their labels.

    python -m chextriev.index build --run runs/chextriev/v6/<ts> --out chextriev_index       # once
    python -m chextriev.predict cxr.png scan.dcm --run runs/chextriev/v6/<ts> --index chextriev_index [--k 5]

Anatomy models (V0-V6, AnaXNet) read 18 anatomy crops. A user image has no Chest ImaGenome scene graph, so the
crops are cut at the index's anatomy ATLAS: the mean box of each anatomy over the indexed images, as fractions of
the image size (drawn on the first panel). That is an approximation of what the paper evaluates (each image's own
boxes): fine for a centred frontal image, off for an unusual field of view. The whole-image models (ResNet50
baseline, ATH) need no boxes. Findings are the model's image-level probabilities (sigmoid of its 9 logits); the
neighbours are the ``--k`` nearest index images by cosine similarity of the retrieval embedding. Writes
OUT/<image>_chextriev.png: the query with the atlas boxes, then each neighbour with its similarity and labels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd chextriev && python predict.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import cv2
import numpy as np
import torch

from shared import predict as common
from shared.config import load_config
from shared.data.images import ImageReadError, load_image
from shared.data.labels import IMAGENOME_FINDINGS

from chextriev.config import ChextrievConfig
from chextriev.data import _normalise, crop_boxes, weights_fingerprint
from chextriev.index import Index, trained_model
from chextriev.train import input_mode, load_adjacency


def model_input(gray: np.ndarray, mode: str, size: int, atlas: np.ndarray) -> torch.Tensor:
    """(1, 18, 3, S, S) anatomy crops at the atlas boxes, or (1, 3, S, S) the whole image (chextriev.data's way)."""
    if mode == "image":
        return torch.from_numpy(_normalise(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)))[None]
    h, w = gray.shape
    crops = crop_boxes(gray, atlas * np.array([w, h, w, h], np.float32), size)
    return torch.from_numpy(np.stack([_normalise(c) for c in crops]))[None]


def fit_panel(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``gray`` scaled to fit inside ``size`` (h, w), centred on black, as RGB (the neighbour keeps its aspect)."""
    f = min(size[0] / gray.shape[0], size[1] / gray.shape[1])
    h, w = max(1, round(gray.shape[0] * f)), max(1, round(gray.shape[1] * f))
    out = np.zeros((*size, 3), np.uint8)
    y, x = (size[0] - h) // 2, (size[1] - w) // 2
    out[y:y + h, x:x + w] = common.gray_rgb(gray, (h, w))
    return out


def neighbour_panel(row, labels: list[str], size: tuple[int, int]) -> np.ndarray:
    """An index image (fitted into ``size``) with its id and labels written on it."""
    try:
        picture = fit_panel(load_image(row["path"]), size)
    except ImageReadError:   # an index moved away from its images: the labels still say what was found
        picture = np.zeros((*size, 3), np.uint8)
    common.put_lines(picture, [f"{row['image_id'][:18]}", *(labels or ["no finding"])], top=size[0] // 2)
    return picture


def load(args: argparse.Namespace) -> common.Predictor:
    files = common.resolve_run(args.run, args.weights, args.config)
    cfg = load_config(ChextrievConfig, files.config, args.overrides)
    index = Index.load(args.index)
    model = trained_model(cfg, files.weights, load_adjacency(cfg, index))
    if weights_fingerprint(model) != index.meta["fingerprint"]:
        raise ValueError(f"--index {args.index} was built with other weights ({index.meta['weights']}) than "
                         f"{files.weights}: rebuild it with python -m chextriev.index build --run RUN --out DIR")
    device = torch.device(args.device)
    model.to(device)
    mode, size = input_mode(cfg)
    labels = index.frame[list(IMAGENOME_FINDINGS)].to_numpy() > 0.5
    k = min(args.k, len(index.frame))

    @torch.no_grad()
    def predict(gray: np.ndarray) -> common.Evidence:
        out = model(model_input(gray, mode, size, index.atlas).to(device))
        probs = torch.sigmoid(out["logits"][0].float()).cpu().numpy()
        emb = out["embedding"][0].float().cpu().numpy()
        sims = index.embeddings @ (emb / max(float(np.linalg.norm(emb)), 1e-12))
        order = np.argsort(-sims, kind="stable")[:k]
        panel = common.panel_size(gray.shape)
        query = common.gray_rgb(gray, panel)
        if mode == "crops":
            for x, y, w, h in index.atlas:
                common.draw_box(query, (x, y, x + w, y + h), (255, 200, 0))
        neighbours, panels = [], [(query, "query" + (" + anatomy atlas" if mode == "crops" else ""))]
        for rank, i in enumerate(order, 1):
            row = index.frame.iloc[i]
            found = [f for f, on in zip(IMAGENOME_FINDINGS, labels[i]) if on]
            neighbours.append({"rank": rank, "image_id": row["image_id"], "similarity": round(float(sims[i]), 6),
                               "labels": found, "path": row["path"]})
            panels.append((neighbour_panel(row, found, panel), f"#{rank} cos={sims[i]:.3f}"))
        return common.Evidence({f: float(p) for f, p in zip(IMAGENOME_FINDINGS, probs)}, panels,
                               {"neighbours": neighbours,
                                "anatomy_boxes": "atlas of the index" if mode == "crops" else "none (whole image)"})

    return common.Predictor("chextriev", predict, size)


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="an index directory (python -m chextriev.index build)")
    parser.add_argument("--k", type=int, default=5, help="how many similar images to show (default 5)")


def main(argv=None) -> int:
    return common.main("chextriev", __doc__, load, argv, extra_args)


if __name__ == "__main__":
    sys.exit(main())
