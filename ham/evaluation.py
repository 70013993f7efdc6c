"""Streaming inference and HAM's metrics (the spec's section 5).

Classification: per-class AUROC and the mean over classes (NaN for a class without positives or negatives:
excluded from the mean and listed — the original set it to 0 and still averaged it); the same for the anomaly
head. Localisation, for each (image, class) with a GT box: P = refined_c >= 0.999, G = the box mask at the
input size (nearest); T(IoU) / T(IoBB) per class through ``shared.metrics.localization.LocalizationMeter``.
Memory does not grow with the number of images beyond two floats per pair and the (N, C) scores
(the original allocated ~26 GB for 880 images).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from shared.progress import progress

from shared.engine import all_gather_object
from shared.metrics.classification import classification_table, per_class_auroc
from shared.metrics.localization import LocalizationMeter

from .losses import LossWeights, ham_losses


@dataclass
class Predictions:
    y_true: np.ndarray      # (N, C)
    y_score: np.ndarray     # (N, C) sigmoid of the disease head
    ano_score: np.ndarray   # (N,) sigmoid of the anomaly head
    losses: dict            # mean of each loss term (val/test formulas: union = symmetric)


@torch.no_grad()
def predict(model, loader, device, autocast=None, loss_weights: LossWeights | None = None,
            desc: str = "predict") -> Predictions:
    """Scores of every image of ``loader`` (classification only: no image-size maps); under torchrun the ranks'
    shards of a ``make_loader(train=False)`` loader are put together, so every rank gets every image once."""
    autocast = autocast or nullcontext
    ys, ss, anos, sums, n = [], [], [], {}, 0
    for batch in progress(loader, desc=desc, unit="batch"):
        x = batch["image"].to(device, non_blocking=True)
        labels = batch["labels"].to(device)
        with autocast():
            out = model(x, refine=False)
        _, parts = ham_losses(out, labels, weights=loss_weights, union="eval")
        b = x.shape[0]
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n += b
        ys.append(batch["labels"].numpy())
        ss.append(torch.sigmoid(out.logit_cls.float()).cpu().numpy())
        anos.append(torch.sigmoid(out.logit_ano.float()).cpu().numpy()[:, 0])
    shards = all_gather_object((ys, ss, anos, sums, n))     # [this process's] when not under torchrun
    ys, ss, anos = ([a for shard in shards for a in shard[i]] for i in range(3))
    sums = {k: sum(shard[3].get(k, 0.0) for shard in shards) for k in {k for shard in shards for k in shard[3]}}
    n = sum(shard[4] for shard in shards)
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
    c = getattr(model, "num_classes", 0)
    return Predictions(cat(ys, (0, c)), cat(ss, (0, c)), cat(anos, (0,)),
                       {k: v / max(n, 1) for k, v in sums.items()})


@torch.no_grad()
def localize(model, loader, device, class_names, threshold: float = 0.999, autocast=None,
             meter: LocalizationMeter | None = None, on_batch=None, desc: str = "localize") -> LocalizationMeter:
    """Update a LocalizationMeter with every (image, class) pair that has a GT box (under torchrun: the pairs of
    every rank's shard). ``on_batch(batch, out)`` is called for each batch (pictures)."""
    autocast = autocast or nullcontext
    meter = meter or LocalizationMeter(class_names)
    own = LocalizationMeter(class_names)
    for batch in progress(loader, desc=desc, unit="batch"):
        x = batch["image"].to(device, non_blocking=True)
        with autocast():
            out = model(x, refine=True)
        if on_batch is not None:
            on_batch(batch, out)
        b_idx, c_idx = batch["has_box"].bool().nonzero(as_tuple=True)
        if b_idx.numel() == 0:
            continue
        pred = (out.refined_cls[b_idx.to(device), c_idx.to(device)] >= threshold).cpu()
        gt = batch["masks"][b_idx, c_idx].bool()
        own.update(c_idx.numpy(), pred, gt)
    for shard in all_gather_object(own):
        meter.merge(shard)
    return meter


def auroc_dict(y_true: np.ndarray, y_score: np.ndarray, class_names) -> dict:
    """{class: auroc, ..., "mean": mean over the non-NaN classes}; NaN classes kept as NaN."""
    auc = per_class_auroc(y_true, y_score)
    out = {c: float(v) for c, v in zip(class_names, auc)}
    valid = ~np.isnan(auc)
    out["mean"] = float(auc[valid].mean()) if valid.any() else float("nan")
    return out


def anomaly_auroc(y_true: np.ndarray, ano_score: np.ndarray) -> float:
    y_ano = (y_true.max(axis=1) > 0).astype(np.float32)[:, None] if len(y_true) else np.zeros((0, 1))
    return float(per_class_auroc(y_ano, ano_score[:, None])[0]) if len(y_true) else float("nan")


def summary_metrics(pred: Predictions | None, meter: LocalizationMeter | None, class_names,
                    prefix: str = "") -> dict[str, float]:
    """Flat {name: float} for logging: auroc_mean, ano_auroc, tiou_<t>_mean, tiou_mean, tiobb_mean, losses."""
    out: dict[str, float] = {}
    if pred is not None and len(pred.y_true):
        auc = auroc_dict(pred.y_true, pred.y_score, class_names)
        out["auroc_mean"] = auc["mean"]
        out["ano_auroc"] = anomaly_auroc(pred.y_true, pred.ano_score)
        out.update({f"loss_{k}": v for k, v in pred.losses.items()})
    if meter is not None and meter.counts().sum() > 0:
        t_iou, t_iobb = meter.tables()
        for t, v in t_iou.loc["mean"].items():
            out[f"tiou_{t}_mean"] = float(v)
        out["tiou_mean"] = float(t_iou.loc["mean"].mean())
        out["tiobb_mean"] = float(t_iobb.loc["mean"].mean())
    return {prefix + k: v for k, v in out.items()}


def auroc_table(pred: Predictions, class_names) -> pd.DataFrame:
    """Per-class classification table (shared.metrics) with the anomaly head as an extra attribute."""
    table = classification_table(pred.y_true, pred.y_score, class_names)
    table.attrs["ano_auroc"] = anomaly_auroc(pred.y_true, pred.ano_score)
    return table


def original_log_lines(auc: dict, t_iou: pd.DataFrame | None) -> list[str]:
    """The result lines in the original's log format ("Test-Cls: Mean AUC", "Test-TIoU: Class{...}")."""
    lines = [f"Test-Cls: Mean AUC {auc['mean']:.4f}"]
    lines += [f"Test-Cls: {c} AUC {v:.4f}" for c, v in auc.items() if c != "mean"]
    if t_iou is not None:
        for c, row in t_iou.iterrows():
            if not row.isna().all():
                vals = ",".join(f"{v:.4f}" for v in row.to_numpy())
                lines.append(f"Test-TIoU: {c}{{{vals}}}")
    return lines
