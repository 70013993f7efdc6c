"""One image -> every label text ranked by cosine similarity (the CGMH fork's inference, fixed and offline).

    python -m cxrclip.inference --run runs/cxrclip/demo/<ts> --image cxr.png [--labels labels.txt] [--json]
    python -m cxrclip.inference -cfg cxrclip/configs/r50_mcc.yaml --weights r50_mcc.tar --trust-checkpoint \
        --image cxr.png --labels cxrclip/prompts/cgmh_labels.txt

``--labels``: a text file with one label per line, a JSON list, or a prompt file (its keys are the labels).
Default: the 14 CheXpert findings. Each label's text is the label itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd cxrclip && python inference.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import argparse
import json

import torch

from cxrclip.config import TrainConfig
from cxrclip.data import eval_transform
from cxrclip.evaluate import embed_texts
from cxrclip.loading import add_weights_args, load_from_args
from shared.cli import cli_exit
from shared.data.images import load_image, to_rgb
from shared.data.labels import CHEXPERT_LABELS


def read_labels(path: str | None) -> list[str]:
    if path is None:
        return list(CHEXPERT_LABELS)
    text = Path(path).read_text()
    if path.endswith(".json"):
        data = json.loads(text)
        return list(data) if isinstance(data, (list, dict)) else []
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"{path}: no labels found")
    return labels


@torch.no_grad()
def rank_labels(model, tokenizer, image_path: str, labels: list[str], cfg: TrainConfig, device) -> list[tuple]:
    image = eval_transform(cfg.data.image_size, cfg.model.image.name)(to_rgb(load_image(image_path)))
    image_emb = model.encode_image(image.unsqueeze(0).to(device)).float().cpu()
    sims = (image_emb @ embed_texts(model, tokenizer, labels, device, max_length=cfg.data.max_length).T)[0]
    order = torch.argsort(sims, descending=True)
    return [(labels[i], float(sims[i])) for i in order]


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True)
    parser.add_argument("--labels", help="labels file (.txt one per line, or .json list / prompt file)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_weights_args(parser)
    args = parser.parse_args(argv)
    loaded = load_from_args(parser, args)
    ranked = rank_labels(loaded.model, loaded.tokenizer(), args.image, read_labels(args.labels), loaded.cfg,
                         loaded.device)
    if args.json:
        print(json.dumps([{"label": label, "similarity": round(sim, 6)} for label, sim in ranked], indent=2))
    else:
        width = max(len(label) for label, _ in ranked)
        print(f"{args.image}")
        for label, sim in ranked:
            print(f"  {label:<{width}}  {sim:+.4f}")
    return ranked


if __name__ == "__main__":
    cli_exit("python -m cxrclip.inference", main)
