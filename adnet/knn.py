"""k-NN evaluation of ADNet features (spec section 4): train -> test search with faiss, a k x t grid.

    python -m adnet.knn -cfg adnet/configs/nih_convnext.yaml --weights best.pt               # cell picked on test
    python -m adnet.knn -cfg ... --weights best.pt --set data.honest_validation=true eval.knn_select=val
    python -m adnet.knn -cfg adnet/configs/chexpert_resnet50.yaml --weights resnet50_ADNet_ALL.pth.tar --grid cross

Protocol: classifier -> identity; feature = LayerNorm(HMT out) (ConvNeXt, 768-d) or HMT out (ResNet, 2048-d),
extracted with the test transforms in fp32 and L2-normalised; cosine similarity of each query to every training
image (faiss exact inner product, ``shared.metrics.retrieval.knn_search``); the top-k neighbours are weighted by
exp(sim / t); class score = the weighted sum of the neighbours' multi-hot labels (AUROC, AP). The threshold
metrics (F1, recall, ... at 0.5), ``eval.knn_threshold_rule``: "original" (faithful) = the sum as a logit, so a
class is predicted whenever any of the k neighbours carries it; "vote_fraction" = the sum divided by the sum of
weights (a neighbour-vote fraction) at 0.5.
Grid: same-dataset k in {20, 40, 60, 80}, t in {16, 32, 64, 128} (``eval.knn_k`` / ``eval.knn_t``);
``--grid cross``: k and t powers of two, 2..1024 and 1..1024. The original picked the best cell on the test
split (faithful default, ``eval.knn_select=test``); ``eval.knn_select=val`` picks it on the patient-disjoint
validation split and reports that cell's test numbers. Runs in one process (no torchrun barrier).
The checkpoint's classifier is never loaded, so weights of any class count (ALL's 21, NIH's 14) serve any
dataset (the cross-dataset grid). ``--weights`` / ``--rename`` are the same options as adnet.test's;
``--variant`` picks raw or EMA weights (default: the ones best.pt was selected on).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd adnet && python knn.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import pandas as pd

from shared.cli import run_cli
from shared.config import parse_config
from shared.engine import select_device
from shared.metrics.retrieval import knn_search

from adnet.checkpoint import load_weights
from adnet.config import ADNetConfig
from adnet.data import build_frame, eval_transform, make_dataset
from adnet.evaluate import (add_weights_args, auroc_mean, build_from_config, checkpoint_variants, eval_loader,
                            metrics_table, min_size_check, output_dir, pick_variant, predict,
                            rename_rules_from_args, table_to_metrics)

CROSS_K = [2 ** i for i in range(1, 11)]      # 2..1024
CROSS_T = [float(2 ** i) for i in range(0, 11)]  # 1..1024


def knn_scores(sims: np.ndarray, neighbours: np.ndarray, train_labels: np.ndarray, k: int, t: float,
               normalise: bool = False) -> np.ndarray:
    """(Q, K) class scores: sum over the top-k of exp(sim / t) * labels (divided by sum of weights if normalise)."""
    s, nb = sims[:, :k].astype(np.float64), neighbours[:, :k]
    w = np.exp((s - s[:, :1]) / t)            # shifted by the best similarity: same ratios, no overflow at small t
    w = np.where(nb >= 0, w, 0.0)
    votes = np.einsum("qk,qkc->qc", w, train_labels[np.clip(nb, 0, None)])
    if normalise:
        return votes / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return votes * np.exp(s[:, :1] / t)       # undo the shift: exactly sum exp(sim / t) * labels


def threshold_scores(rule: str, sims, neighbours, train_labels, k: int, t: float) -> np.ndarray:
    """(Q, K) scores the threshold metrics compare with 0.5 (AUROC / AP use :func:`knn_scores` unchanged)."""
    if rule == "vote_fraction":
        return knn_scores(sims, neighbours, train_labels, k, t, normalise=True)
    # original: sigmoid(weighted sum) > 0.5, i.e. sum > 0: predicted when any neighbour carries the class
    return (knn_scores(sims, neighbours, train_labels, k, t) > 0).astype(np.float64)


def grid_search(train_emb, train_labels, query_emb, query_labels, ks, ts) -> pd.DataFrame:
    """Mean AUROC of every (k, t) cell for one query set -> DataFrame (rows k, columns t)."""
    kmax = min(max(ks), len(train_emb))
    sims, nb = knn_search(query_emb, kmax, database=train_emb)
    out = pd.DataFrame(index=pd.Index(ks, name="k"), columns=pd.Index(ts, name="t"), dtype=float)
    for k in ks:
        for t in ts:
            out.loc[k, t] = auroc_mean(query_labels, knn_scores(sims, nb, train_labels, min(k, kmax), t))
    return out


def run_knn(cfg: ADNetConfig, weights: str | Path, run_dir: str | Path, grid: str = "same",
            extra_rules=(), variant: str = "auto") -> dict:
    """k-NN on ``weights``: any class count (the checkpoint's classifier is ignored, so a 21-class ALL or a
    14-class NIH checkpoint serves a CheXpert config). ``variant``: auto (the weights best.pt was selected on,
    else EMA when present), raw or ema."""
    frame, labels = build_frame(cfg.data)
    device = select_device(cfg.engine.device)
    model, _ = build_from_config(cfg, len(labels), load_pretrained=False)
    min_size_check(cfg, model)
    variants, best_source = checkpoint_variants(weights)
    variant = pick_variant(variants, best_source, variant)
    model.reset_classifier(0)                # classifier -> identity, before loading: any class count fits
    load_weights(model, variants[variant], extra_rules=extra_rules, ignore_head=True,
                 source_name=f"{weights} ({variant})")
    model.to(device).eval()
    tf = eval_transform(cfg.data)
    bs, nw = cfg.eval.knn_batch_size, cfg.engine.num_workers
    feats = {}
    for split in ["train", "test"] + (["val"] if cfg.eval.knn_select == "val" else []):
        ds = make_dataset(frame, split, labels, tf, cfg.data.limit_test if split == "test" else 0)
        feats[split] = predict(model, eval_loader(ds, bs, nw), device, None, embed=True, desc=f"features/{split}")
    ks, ts = (CROSS_K, CROSS_T) if grid == "cross" else (list(cfg.eval.knn_k), list(cfg.eval.knn_t))
    (train_emb, train_lab) = feats["train"]
    sel = cfg.eval.knn_select
    grid_table = grid_search(train_emb, train_lab, *feats[sel], ks, ts)
    k_best, t_best = grid_table.stack().astype(float).idxmax()
    test_emb, test_lab = feats["test"]
    kmax = min(int(k_best), len(train_emb))
    sims, nb = knn_search(test_emb, kmax, database=train_emb)
    scores = knn_scores(sims, nb, train_lab, kmax, float(t_best))
    table = metrics_table(test_lab, scores, labels, cfg.data.dataset)
    votes = metrics_table(test_lab, threshold_scores(cfg.eval.knn_threshold_rule, sims, nb, train_lab, kmax,
                                                     float(t_best)), labels, cfg.data.dataset)
    for col in table.columns:
        if col not in ("auroc", "ap"):
            table[col] = votes[col]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    test_grid = grid_table if sel == "test" else grid_search(train_emb, train_lab, test_emb, test_lab, ks, ts)
    lines = [f"# k-NN ({variant} weights): {len(train_emb)} train -> {len(test_emb)} test, cell picked on {sel}: "
             f"k={int(k_best)}, t={t_best:g}", "", f"## mean AUROC grid on {sel}", "",
             grid_table.round(4).to_string()]
    if sel != "test":
        lines += ["", "## mean AUROC grid on test", "", test_grid.round(4).to_string()]
    from shared.metrics.classification import render_table
    lines += ["", f"## test metrics at k={int(k_best)}, t={t_best:g}", "", render_table(table)]
    (run_dir / "knn_metrics.md").write_text("\n".join(lines) + "\n")
    grid_table.to_csv(run_dir / f"knn_grid_{sel}.csv")
    print("\n".join(lines))
    return {"k": int(k_best), "t": float(t_best), "table": table, "grid": grid_table, "test_grid": test_grid,
            "metrics": table_to_metrics(table), "run_dir": run_dir}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adnet.knn", description=__doc__.split("\n\n")[0])
    add_weights_args(parser)
    parser.add_argument("--run-dir", default=None,
                        help="where to write the k-NN results (default: the run the weights come from when they are "
                             "RUN/checkpoints/*.pt, else a new <runs_root>/adnet/<config name>_knn/<timestamp>)")
    parser.add_argument("--grid", choices=["same", "cross"], default="same",
                        help="same: eval.knn_k x eval.knn_t; cross: powers of two (k 2..1024, t 1..1024)")
    parser.add_argument("--variant", choices=["auto", "raw", "ema"], default="auto",
                        help="which weights of our checkpoint: auto = the ones best.pt was selected on "
                             "(best_source), else EMA when present")
    cfg, args = parse_config(ADNetConfig, argv, parser=parser)
    rules = rename_rules_from_args(parser, args)
    def action():
        run_knn(cfg, args.weights, output_dir(cfg, args.weights, args.run_dir, "knn"), grid=args.grid,
                extra_rules=rules, variant=args.variant)
    return run_cli("adnet.knn", action)

if __name__ == "__main__":
    sys.exit(main())
