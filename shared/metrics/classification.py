"""Multi-label classification metrics with one NaN policy.

    auroc = per_class_auroc(y_true, y_score)                        # (C,), NaN where undefined
    table = classification_table(y_true, y_score, NIH_LABELS)       # rows: classes + "mean"
    print(render_table(table))                                      # markdown + the "excluded" note line
    ci = bootstrap_ci(y_true, y_score, metric="auroc", n=1000, seed=0, class_names=NIH_LABELS)

Inputs are numpy arrays or torch tensors (any device): ``y_true`` (N, C) of 0/1 (or (N,) for one class),
``y_score`` (N, C) of scores or probabilities.

NaN policy. A class whose ``y_true`` column has no positives or no negatives has no AUROC; it is *excluded*:
its AUROC and AP are NaN, it does not enter any column of the "mean" row (the means are over the same set of
classes in every column), and ``df.attrs["excluded"]`` lists it (``render_table`` prints a note line). The
original HAM code set such an AUROC to 0 and averaged it; we do not.

Threshold metrics use ``y_score >= threshold`` (a scalar or one threshold per class). Sensitivity is NaN
without positives, specificity NaN without negatives; precision and F1 are 0 when their denominator is 0
(scikit-learn's ``zero_division=0``).
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from ._util import as_2d, binary_labels, default_names, to_numpy

__all__ = [
    "per_class_auroc", "per_class_ap", "threshold_metrics", "classification_table", "bootstrap_ci",
    "render_table", "MEAN_ROW", "COLUMNS",
]

MEAN_ROW = "mean"
COLUMNS = ["auroc", "ap", "f1", "accuracy", "sensitivity", "specificity", "precision"]


def _check(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    yt = binary_labels(as_2d(y_true, "y_true"), "y_true")
    ys = as_2d(y_score, "y_score").astype(np.float64, copy=False)
    if yt.shape != ys.shape:
        raise ValueError(f"y_true {yt.shape} and y_score {ys.shape} must have the same shape")
    if yt.shape[0] == 0:
        raise ValueError("empty input: y_true has no rows")
    if not np.isfinite(ys).all():
        bad = np.argwhere(~np.isfinite(ys))[0]
        raise ValueError(f"y_score has a non-finite value (first at row {bad[0]}, class {bad[1]})")
    return yt, ys


def _valid(yt: np.ndarray) -> np.ndarray:
    pos = yt.sum(0)
    return (pos > 0) & (pos < yt.shape[0])


def per_class_auroc(y_true, y_score) -> np.ndarray:
    """AUROC per class (scikit-learn ``roc_auc_score``); NaN for a class without positives or negatives."""
    yt, ys = _check(y_true, y_score)
    valid = _valid(yt)
    return np.array([roc_auc_score(yt[:, c], ys[:, c]) if valid[c] else np.nan for c in range(yt.shape[1])])


def per_class_ap(y_true, y_score) -> np.ndarray:
    """Average precision per class (scikit-learn); NaN for a class without positives or negatives."""
    yt, ys = _check(y_true, y_score)
    valid = _valid(yt)
    return np.array([average_precision_score(yt[:, c], ys[:, c]) if valid[c] else np.nan
                     for c in range(yt.shape[1])])


def threshold_metrics(y_true, y_score, threshold=0.5) -> dict[str, np.ndarray]:
    """F1, accuracy, sensitivity, specificity, precision per class at ``y_score >= threshold`` (vectorised)."""
    yt, ys = _check(y_true, y_score)
    thr = np.broadcast_to(np.asarray(to_numpy(threshold), dtype=np.float64), (yt.shape[1],))
    pred = ys >= thr[None, :]
    tp = (pred & yt).sum(0).astype(np.float64)
    fp = (pred & ~yt).sum(0).astype(np.float64)
    fn = (~pred & yt).sum(0).astype(np.float64)
    tn = (~pred & ~yt).sum(0).astype(np.float64)

    def div(a, b, empty):
        out = np.full_like(a, empty)
        np.divide(a, b, out=out, where=b > 0)
        return out

    return {
        "f1": div(2 * tp, 2 * tp + fp + fn, 0.0),
        "accuracy": (tp + tn) / yt.shape[0],
        "sensitivity": div(tp, tp + fn, np.nan),
        "specificity": div(tn, tn + fp, np.nan),
        "precision": div(tp, tp + fp, 0.0),
    }


def classification_table(y_true, y_score, class_names: Sequence[str] | None = None,
                         threshold=0.5) -> pd.DataFrame:
    """Per-class metrics + a "mean" row (macro mean over the classes that are not excluded).

    Columns: auroc, ap, f1, accuracy, sensitivity, specificity, precision. ``df.attrs["excluded"]`` lists the
    classes without positives or negatives (NaN AUROC, left out of every mean); ``df.attrs["threshold"]``
    records the threshold.
    """
    yt, ys = _check(y_true, y_score)
    names = default_names(class_names, yt.shape[1])
    if MEAN_ROW in names:
        raise ValueError(f"a class may not be named {MEAN_ROW!r} (that row holds the mean)")
    valid = _valid(yt)
    cols = {"auroc": per_class_auroc(yt, ys), "ap": per_class_ap(yt, ys)}
    cols.update(threshold_metrics(yt, ys, threshold))
    df = pd.DataFrame({c: cols[c] for c in COLUMNS}, index=pd.Index(names, name="class"))
    mean = df[valid].mean(axis=0, skipna=True) if valid.any() else pd.Series(np.nan, index=COLUMNS)
    df.loc[MEAN_ROW] = mean
    df.attrs["excluded"] = [n for n, v in zip(names, valid) if not v]
    df.attrs["threshold"] = np.asarray(to_numpy(threshold)).tolist()
    return df


def render_table(df: pd.DataFrame, digits: int = 3) -> str:
    """Markdown table of a metrics DataFrame; appends the "excluded" note when ``df.attrs`` has one."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for name, row in df.iterrows():
        cells = []
        for v in row.values:
            if isinstance(v, (float, np.floating)):
                cells.append("NaN" if np.isnan(v) else f"{v:.{digits}f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    excluded = df.attrs.get("excluded") or []
    if excluded:
        lines.append("")
        lines.append(f"Note: excluded from the mean (no positives or no negatives, metric undefined): "
                     f"{', '.join(map(str, excluded))}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- bootstrap
# A resample is a vector of counts w (how often each row was drawn). With positives and negatives sorted by
# score once, the resampled AUROC and AP need only cumulative sums of w and gathers at searchsorted positions
# (all integer until the last division), so blocks of resamples are computed at once and the result equals
# scikit-learn on the resampled rows exactly, ties included.
def _split_sorted(y: np.ndarray, s: np.ndarray):
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    pos = pos[np.argsort(s[pos], kind="stable")]
    neg = neg[np.argsort(s[neg], kind="stable")]
    sp, sn = s[pos], s[neg]
    return pos, neg, sp, sn


def _cum0(w: np.ndarray) -> np.ndarray:
    out = np.zeros((w.shape[0], w.shape[1] + 1), dtype=np.int64)
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def _weighted_auroc(counts: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC of each row of resample ``counts`` (B, N) — exactly roc_auc_score on the repeated samples."""
    pos, neg, sp, sn = _split_sorted(y, s)
    wp = counts[:, pos]
    cn = _cum0(counts[:, neg])                                   # negative weight below each sorted position
    below = cn[:, np.searchsorted(sn, sp, "left")]               # negatives with a lower score
    upto = cn[:, np.searchsorted(sn, sp, "right")]               # ... lower or tied
    num2 = (wp * (below + upto)).sum(1)                          # 2 x sum over positives of (lower + tie/2)
    p, n = wp.sum(1), cn[:, -1]
    out = np.full(counts.shape[0], np.nan)
    ok = (p > 0) & (n > 0)
    out[ok] = num2[ok] / (2.0 * p[ok] * n[ok])
    return out


def _weighted_ap(counts: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Average precision of each resample — exactly average_precision_score on the repeated samples."""
    pos, neg, sp, sn = _split_sorted(y, s)
    wp = counts[:, pos]
    cp, cn = _cum0(wp), _cum0(counts[:, neg])
    p, n = cp[:, -1], cn[:, -1]
    tp = p[:, None] - cp[:, np.searchsorted(sp, sp, "left")]     # positive weight with score >= s_i
    fp = n[:, None] - cn[:, np.searchsorted(sn, sp, "left")]     # negative weight with score >= s_i
    prec = np.zeros(tp.shape)
    np.divide(tp, tp + fp, out=prec, where=(tp + fp) > 0)
    out = np.full(counts.shape[0], np.nan)
    ok = (p > 0) & (n > 0)
    out[ok] = (wp * prec).sum(1)[ok] / p[ok]
    return out


_VECTORISED = {"auroc": (_weighted_auroc, roc_auc_score), "ap": (_weighted_ap, average_precision_score)}


def bootstrap_samples(y_true, y_score, metric: str | Callable = "auroc", n: int = 1000, seed: int = 0,
                      block_elems: int = 4_000_000) -> np.ndarray:
    """Per-resample, per-class metric values, shape (n, C); NaN where a resample lacks positives or negatives.

    Resamples draw N rows with replacement (``numpy.random.default_rng(seed)``), the same rows for every class
    (so class means are paired). "auroc"/"ap" are computed for blocks of resamples at once from resample counts
    (exactly equal to scikit-learn on the resampled rows); a callable ``metric(y_true_1d, y_score_1d)`` is
    called per resample and class.
    """
    yt, ys = _check(y_true, y_score)
    N, C = yt.shape
    rng = np.random.default_rng(seed)
    out = np.full((n, C), np.nan)
    block = max(1, min(n, block_elems // max(N, 1)))
    for b0 in range(0, n, block):
        b = min(block, n - b0)
        idx = rng.integers(0, N, size=(b, N))
        if isinstance(metric, str):
            if metric not in _VECTORISED:
                raise ValueError(f"unknown bootstrap metric {metric!r}; use one of {list(_VECTORISED)} "
                                 "or a callable(y_true, y_score) -> float")
            counts = np.bincount((idx + (np.arange(b) * N)[:, None]).ravel(), minlength=b * N).reshape(b, N)
            fn = _VECTORISED[metric][0]
            for c in range(C):
                out[b0:b0 + b, c] = fn(counts, yt[:, c], ys[:, c])
        else:
            for i in range(b):
                yi, si = yt[idx[i]], ys[idx[i]]
                for c in range(C):
                    if 0 < yi[:, c].sum() < N:
                        out[b0 + i, c] = float(metric(yi[:, c], si[:, c]))
    return out


def bootstrap_ci(y_true, y_score, metric: str | Callable = "auroc", n: int = 1000, seed: int = 0,
                 alpha: float = 0.05, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Percentile bootstrap confidence intervals per class and for the macro mean.

    Returns a DataFrame indexed by class names + "mean" with columns ``estimate`` (on the full data),
    ``low``, ``high`` (the alpha/2 and 1-alpha/2 percentiles over resamples) and ``n_valid`` (resamples where
    the metric was defined). The mean row's resample value is the mean over the classes defined in that
    resample, with the classes excluded on the full data left out.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    yt, ys = _check(y_true, y_score)
    names = default_names(class_names, yt.shape[1])
    valid = _valid(yt)
    if isinstance(metric, str):
        if metric not in _VECTORISED:
            raise ValueError(f"unknown bootstrap metric {metric!r}; use one of {list(_VECTORISED)} or a callable")
        point_fn = _VECTORISED[metric][1]
    else:
        point_fn = metric
    est = np.array([float(point_fn(yt[:, c], ys[:, c])) if valid[c] else np.nan for c in range(yt.shape[1])])
    samples = bootstrap_samples(yt, ys, metric, n=n, seed=seed)
    samples[:, ~valid] = np.nan
    with warnings.catch_warnings():                   # all-NaN columns (excluded classes) stay NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_s = np.nanmean(samples[:, valid], axis=1) if valid.any() else np.full(n, np.nan)
        allv = np.concatenate([samples, mean_s[:, None]], axis=1)
        lo, hi = np.nanpercentile(allv, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    est_mean = np.nanmean(est[valid]) if valid.any() else np.nan
    df = pd.DataFrame({"estimate": np.r_[est, est_mean], "low": lo, "high": hi,
                       "n_valid": np.isfinite(allv).sum(0)},
                      index=pd.Index(names + [MEAN_ROW], name="class"))
    df.attrs.update(excluded=[c for c, v in zip(names, valid) if not v], metric=str(metric), n=n, seed=seed,
                    alpha=alpha)
    return df
