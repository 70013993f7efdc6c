"""CXR-CLIP on your own chest X-ray: zero-shot scores over a label list and, given a text set, the nearest reports.

    python -m cxrclip.predict cxr.png scan.dcm --run runs/cxrclip/demo/<ts> [--labels cxrclip/prompts/cgmh_labels.txt]
    python -m cxrclip.predict cxr.png -cfg cxrclip/configs/r50_mcc.yaml --weights r50_mcc.tar --trust-checkpoint \
        --texts reports.txt --k 5

The image goes through CXR-CLIP's test transform (shorter side to image_size, centre crop, ImageNet or 0.5/0.5
normalisation for Swin). Each label gets the paper's binary zero-shot probability: softmax over the cosine
similarities of the image with a [negative, positive] prompt pair (``eval.binary_prompts`` of the config when it
has the label, else ["No <label>", "<label>"]), and its plain cosine similarity with the label text (the CGMH
fork's ranking; ``similarity`` in the JSON). ``--labels``: one label per line, a JSON list or a prompt file
(default: the 14 CheXpert findings). ``--texts``: report texts, one per line (or a JSON list): the ``--k`` most
similar are listed. Writes OUT/<image>_cxrclip.png: the image, the label scores, the nearest texts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd cxrclip && python predict.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch

from shared import predict as common
from shared.data.images import to_rgb
from shared.metrics.zeroshot import binary_prompt_probability

from cxrclip.data import eval_transform
from cxrclip.evaluate import embed_texts
from cxrclip.inference import read_labels
from cxrclip.loading import Loaded, load_from_args


def load_cxrclip(args: argparse.Namespace) -> Loaded:
    """The one place predict loads weights: our run (--run) or a released checkpoint (-cfg + --weights)."""
    args.overrides = [*args.overrides, f"engine.device={args.device}"]
    return load_from_args(argparse.ArgumentParser(prog="python -m cxrclip.predict"), args)


def load(args: argparse.Namespace) -> common.Predictor:
    loaded = load_cxrclip(args)
    cfg, model, device = loaded.cfg, loaded.model, loaded.device
    tokenizer = loaded.tokenizer()
    labels = read_labels(args.labels)
    texts = read_labels(args.texts) if args.texts else []
    embed = lambda items: embed_texts(model, tokenizer, items, device, max_length=cfg.data.max_length)  # noqa: E731
    pairs = [list(cfg.eval.binary_prompts.get(label, (f"No {label}", label))) for label in labels]
    pair_emb = embed([p for pair in pairs for p in pair])
    label_emb = embed(labels)
    text_emb = embed(texts) if texts else None
    transform = eval_transform(cfg.data.image_size, cfg.model.image.name)

    @torch.no_grad()
    def predict(gray: np.ndarray) -> common.Evidence:
        image_emb = model.encode_image(transform(to_rgb(gray)).unsqueeze(0).to(device)).float().cpu()
        sims = (image_emb @ pair_emb.T).numpy().reshape(len(labels), 2)
        probs = binary_prompt_probability(sims[:, 0], sims[:, 1])
        cosine = (image_emb @ label_emb.T)[0].numpy()
        extra = {"similarity": {label: round(float(c), 6) for label, c in zip(labels, cosine)}}
        size = common.panel_size(gray.shape)
        ranked = sorted(zip(labels, probs), key=lambda lp: -lp[1])
        panels = [(common.gray_rgb(gray, size), "input"),
                  (common.bar_panel(ranked, size), "zero-shot p(positive prompt)")]
        if text_emb is not None:
            text_sims = (image_emb @ text_emb.T)[0].numpy()
            order = np.argsort(-text_sims, kind="stable")[:args.k]
            extra["nearest_texts"] = [{"rank": r, "similarity": round(float(text_sims[i]), 6), "text": texts[i]}
                                      for r, i in enumerate(order, 1)]
            lines = [""] + [f"{r}. ({text_sims[i]:.3f}) {texts[i]}" for r, i in enumerate(order, 1)]
            panels.append((common.text_panel(lines, size), f"nearest of {len(texts)} texts"))
        return common.Evidence({label: float(p) for label, p in zip(labels, probs)}, panels, extra)

    return common.Predictor("cxrclip", predict, cfg.data.image_size)


def extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", help="labels file (.txt one per line, or .json list / prompt file)")
    parser.add_argument("--texts", help="report texts to rank (.txt one per line, or a .json list)")
    parser.add_argument("--k", type=int, default=5, help="how many nearest texts to list (default 5)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow the pickled objects of a released checkpoint in --weights (files you trust)")


def main(argv=None) -> int:
    return common.main("cxrclip", __doc__, load, argv, extra_args)


if __name__ == "__main__":
    sys.exit(main())
