"""Linear probe of a CXR-CLIP image encoder (RSNA / SIIM / VinDr style classification CSVs).

    python -m cxrclip.finetune --run runs/cxrclip/r50_m/<ts> --train-csv tr.csv --valid-csv va.csv \
        --test-csv te.csv --classes Pneumonia [--fraction 0.1] [--epochs 300]

The image encoder (+ its projection input, i.e. the 2048/768-d pooled feature) is loaded alone, frozen and kept in
eval mode; a Linear(out_dim, n_classes) is trained with BCEWithLogits and AdamW (lr 5e-5, wd 1e-4, batch 256).
10% of the training rows (sampled with random_state 1) for 300 epochs, or 100% for 30, as in the paper. The
encoder is frozen, so the features are computed once (eval transform) and the probe trains on them in seconds — a
deviation from training on augmented images, listed in the README. As the original: 10% warmup then cosine decay,
and the epoch with the lowest validation loss is evaluated on test (``--schedule constant``, ``--select val-auroc``:
the alternatives).

CSV format: ``image`` (path, relative to the CSV's folder or ``--image-root``) and either one 0/1 column per class
or a ``label`` column (a scalar, or a list such as VinDr's 20 values with ``--label-names``).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd cxrclip && python finetune.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import argparse
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrclip.data import eval_transform, read_classification_csv
from cxrclip.evaluate import _Images
from cxrclip.loading import add_weights_args, load_from_args
from shared.cli import cli_exit
from shared.engine import cosine_schedule, create_run_dir, seed_everything
from shared.metrics.classification import classification_table, render_table
from shared.report import write_results

VINDR_DROPPED = ("Other lesion", "Other disease")  # 20 -> 18 labels, as in the paper


@torch.no_grad()
def features(encoder: nn.Module, paths: list[str], transform, device, batch_size: int = 256) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(_Images(paths, transform), batch_size=batch_size)
    return torch.cat([encoder(x.to(device)).float().cpu() for x in loader])


def train_probe(train_x, train_y, valid_x, valid_y, epochs: int, lr: float, weight_decay: float,
                batch_size: int = 256, seed: int = 0, schedule: str = "warmup-cosine",
                select: str = "val-loss") -> tuple[nn.Linear, pd.DataFrame]:
    """AdamW + BCE on cached features. As the original by default: per-step linear warmup over 10% of the steps
    then cosine decay to 0 (``schedule="constant"``: a fixed lr), and the epoch with the lowest validation BCE
    kept (``select="val-auroc"``: the highest validation mean AUROC). Returns the kept probe and the per-epoch
    history (lr at the epoch's last step, val_loss, val_auroc, kept)."""
    torch.manual_seed(seed)
    probe = nn.Linear(train_x.shape[1], train_y.shape[1])
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * math.ceil(len(train_x) / batch_size)
    scheduler = (cosine_schedule(optimizer, total, warmup_steps=int(0.1 * total)) if schedule == "warmup-cosine"
                 else None)
    targets, valid_targets = torch.as_tensor(train_y), torch.as_tensor(valid_y)
    history, best_state = [], None
    for _ in range(epochs):
        for idx in torch.randperm(len(train_x)).split(batch_size):
            lr_used = optimizer.param_groups[0]["lr"]
            loss = nn.functional.binary_cross_entropy_with_logits(probe(train_x[idx]), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler:
                scheduler.step()
        with torch.no_grad():
            logits = probe(valid_x)
            val_loss = nn.functional.binary_cross_entropy_with_logits(logits, valid_targets).item()
            auroc = classification_table(valid_y, torch.sigmoid(logits).numpy()).loc["mean", "auroc"]
        score = -val_loss if select == "val-loss" else float(np.nan_to_num(auroc, nan=-1.0))
        kept = not history or score > max(h["score"] for h in history)
        if kept:
            best_state = {k: v.clone() for k, v in probe.state_dict().items()}
        history.append({"lr": lr_used, "val_loss": val_loss, "val_auroc": float(auroc), "score": score})
    probe.load_state_dict(best_state)
    frame = pd.DataFrame(history).drop(columns="score")
    frame["kept"] = False
    frame.loc[int(np.argmax([h["score"] for h in history])), "kept"] = True
    return probe, frame


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_args(parser)
    for split in ("train", "valid", "test"):
        parser.add_argument(f"--{split}-csv", required=True)
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--label-names", nargs="+", help="names of a list-valued 'label' column")
    parser.add_argument("--image-root")
    parser.add_argument("--fraction", type=float, default=1.0, help="0.1 = the paper's 10%% setting")
    parser.add_argument("--epochs", type=int, default=None, help="default 300 for 10%%, 30 for 100%%")
    parser.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (the paper's 5e-5)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (the paper's 1e-4)")
    parser.add_argument("--schedule", choices=("warmup-cosine", "constant"), default="warmup-cosine",
                        help="lr schedule: 10%% warmup then cosine (the original) or constant (our earlier probe)")
    parser.add_argument("--select", choices=("val-loss", "val-auroc"), default="val-loss",
                        help="kept epoch: lowest validation BCE (the original) or highest validation mean AUROC")
    args = parser.parse_args(argv)
    loaded = load_from_args(parser, args, image_only=True)
    cfg, device = loaded.cfg, loaded.device
    seed_everything(cfg.engine.seed)
    encoder = loaded.model.image_encoder.requires_grad_(False)

    data = {s: read_classification_csv(getattr(args, f"{s}_csv"), args.classes, args.label_names, args.image_root)
            for s in ("train", "valid", "test")}
    paths, labels = data["train"]
    if args.fraction < 1.0:
        keep = pd.Series(range(len(paths))).sample(frac=args.fraction, random_state=1).sort_values().to_numpy()
        paths, labels = [paths[i] for i in keep], labels[keep]
    epochs = args.epochs or (300 if args.fraction < 1.0 else 30)
    test_tf = eval_transform(cfg.data.image_size, cfg.model.image.name)
    train_x = features(encoder, paths, test_tf, device)
    valid_x = features(encoder, data["valid"][0], test_tf, device)
    probe, _ = train_probe(train_x, labels, valid_x, data["valid"][1], epochs, args.lr, args.weight_decay,
                        schedule=args.schedule, select=args.select)
    with torch.no_grad():
        probs = torch.sigmoid(probe(features(encoder, data["test"][0], test_tf, device))).numpy()
    table = classification_table(data["test"][1], probs, args.classes)
    print(render_table(table))
    run_dir = create_run_dir("cxrclip", f"{cfg.name}-probe{int(args.fraction * 100)}", root=cfg.output_root)
    metrics = {"probe_auroc": table["auroc"].to_dict(), "probe_accuracy": table["accuracy"].to_dict(),
               "probe_f1": table["f1"].to_dict()}
    write_results(run_dir, "cxrclip", f"{cfg.name}-probe{int(args.fraction * 100)}", metrics,
                  notes=[f"linear probe, {args.fraction:.0%} of training rows, {epochs} epochs, "
                         f"{args.schedule} lr, best {args.select}"])
    print(f"results: {Path(run_dir).resolve() / 'results.json'}")
    return metrics


if __name__ == "__main__":
    cli_exit("python -m cxrclip.finetune", main)
