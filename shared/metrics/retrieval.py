"""Image retrieval metrics exactly as CheXtriev defines them, and the faiss search that feeds them.

    scores, nbrs = knn_search(embeddings, k=10)                    # leave-one-out within the test set
    table = retrieval_metrics(labels, nbrs, k=10, class_names=IMAGENOME_FINDINGS)
    table.loc["Class Average", "mAP"]                               # the published headline

Protocol (CheXtriev). Relevance is per class: for class c the queries are the images positive for c, and a
retrieved image is relevant iff it is positive for c; a multi-label query contributes one row per positive
class. For a query row with hit ranks r_1 < ... < r_m within the top k:
AP = (1/m) * sum_j j / r_j (0 if m = 0; normalised by the hits found, not by all relevant items),
HR = m / k, RR = 1 / r_1 (0 if no hit). A class's value is the mean over its query rows; "Class Average" is the
unweighted mean over classes, "Class Weighted Average" weights each class by its number of query rows
(= the original's test_weights.npy, counts / total rows). ``skip_no_hit=True`` (the original's "skip" mode)
drops zero-hit rows from the class means — it inflates numbers; the paper reports skip=False. The weights stay
the full query counts in both modes (the original loads them from a fixed file).

A class with no query rows (no positive image in a subgroup, or every row dropped by skip mode) has no mean.
``empty_class="exclude"`` (default): its row is NaN and it is left out of both averages
(``df.attrs["excluded"]``). ``empty_class="zero"`` (the original's convention, needed to compare subgroup and
skip-mode tables with published ones): its row is 0.0 and both averages still run over all classes — Class
Average divides by C, the weighted average is sum_c w_c * value_c (``df.attrs["zeroed"]``). On a table where every
class has query rows (the full 9/17-class test tables at skip=False) the two conventions agree.

``neighbors`` must already exclude the query itself; ``knn_search`` does that (by index — correct when two test
images are identical, as CheXtriev's 1517 and 2878 are) or, with ``faithful_drop_first=True``, drops the first
result as the original did. Entries < 0 (faiss's "no result") count as non-relevant.

Subgroups (view / sex / age bin) filter queries AND database: take ``m = subgroup_mask(frame, ...)``, then
re-run ``knn_search(emb[m], k)`` and ``retrieval_metrics(labels[m], ...)`` on the subset — the caller re-runs
the search; neighbours from the full search cannot simply be filtered.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..data.labels import IMAGENOME_FINDINGS
from ._util import binary_labels, default_names, to_numpy

__all__ = [
    "retrieval_metrics", "per_query_metrics", "knn_search", "side_aware_labels", "image_labels",
    "subgroup_mask", "SIDE_AWARE_CLASSES", "AGE_BINS", "CLASS_AVERAGE", "CLASS_WEIGHTED_AVERAGE",
    "EMPTY_CLASS_CONVENTIONS",
]

CLASS_AVERAGE = "Class Average"
CLASS_WEIGHTED_AVERAGE = "Class Weighted Average"
AGE_BINS = {"20-40": (20, 40), "40-60": (40, 60), "60-80": (60, 80), "80-100": (80, 100)}

_ECS = "enlarged cardiac silhouette"
_SIDED = [f for f in IMAGENOME_FINDINGS if f != _ECS]
# 17-class variant: right x 8 findings, left x 8 findings (ImaGenome finding order), enlarged cardiac silhouette.
SIDE_AWARE_CLASSES = [f"right {f}" for f in _SIDED] + [f"left {f}" for f in _SIDED] + [_ECS]


def _check(labels, neighbors, k: int) -> tuple[np.ndarray, np.ndarray]:
    lab = binary_labels(to_numpy(labels), "labels")
    if lab.ndim == 1:
        lab = lab[:, None]
    if lab.ndim != 2:
        raise ValueError(f"labels must be (N, C), got shape {lab.shape}")
    nb = to_numpy(neighbors)
    if nb.ndim != 2 or nb.shape[0] != lab.shape[0]:
        raise ValueError(f"neighbors must be (N, >=k) with N = {lab.shape[0]} rows, got shape {nb.shape}")
    if not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbors must hold integer indices, got dtype {nb.dtype}")
    k = int(k)
    if k < 1 or nb.shape[1] < k:
        raise ValueError(f"k={k} needs 1 <= k <= neighbors.shape[1] = {nb.shape[1]}")
    nb = nb[:, :k].astype(np.int64)
    if (nb >= lab.shape[0]).any():
        r = int(np.argwhere(nb >= lab.shape[0])[0, 0])
        raise ValueError(f"neighbors row {r} has an index >= N = {lab.shape[0]}: {nb[r].tolist()}")
    return lab, nb


def _per_query(lab: np.ndarray, nb: np.ndarray):
    """(N, C) AP, HR, RR and hit counts for every (query, class) pair, vectorised."""
    k = nb.shape[1]
    valid = nb >= 0
    rel = lab[np.where(valid, nb, 0)] & valid[:, :, None]           # (N, k, C)
    hits = rel.sum(1)                                                 # (N, C)
    ranks = np.arange(1, k + 1, dtype=np.float64)[None, :, None]
    prec = np.cumsum(rel, axis=1) / ranks                             # j / r_j at hit positions
    ap = np.where(hits > 0, (prec * rel).sum(1) / np.maximum(hits, 1), 0.0)
    hr = hits / k
    first = rel.argmax(1)                                             # 0-based rank of the first hit
    rr = np.where(hits > 0, 1.0 / (first + 1), 0.0)
    return ap, hr, rr, hits, rel


EMPTY_CLASS_CONVENTIONS = ("exclude", "zero")


def retrieval_metrics(labels, neighbors, k: int, skip_no_hit: bool = False,
                      class_names: Sequence[str] | None = None, *, empty_class: str = "exclude") -> pd.DataFrame:
    """mAP / mHR / mRR @k per class + "Class Average" + "Class Weighted Average" (see module doc).

    ``labels``: (N, C) 0/1; ``neighbors``: (N, >=k) ranked database indices (query removed).
    ``empty_class``: "exclude" (NaN, left out of the averages) or "zero" (0.0, averaged over all classes: the
    original's convention) for a class without query rows.
    ``df.attrs``: ``query_counts`` (rows per class), ``weights`` (counts / total), ``excluded`` (classes left
    out), ``zeroed`` (classes counted as 0), ``empty_class``, ``k``, ``skip``.
    """
    if empty_class not in EMPTY_CLASS_CONVENTIONS:
        raise ValueError(f"empty_class must be one of {EMPTY_CLASS_CONVENTIONS}, got {empty_class!r}")
    lab, nb = _check(labels, neighbors, k)
    names = default_names(class_names, lab.shape[1])
    ap, hr, rr, hits, _ = _per_query(lab, nb)
    counts = lab.sum(0).astype(np.int64)
    use = lab & (hits > 0) if skip_no_hit else lab
    n_use = use.sum(0)
    out = np.full((lab.shape[1], 3), np.nan)
    ok = n_use > 0
    for j, v in enumerate((ap, hr, rr)):
        out[ok, j] = (v * use).sum(0)[ok] / n_use[ok]
    weights = counts / max(counts.sum(), 1)
    have = (counts > 0) & ok
    zeroed: list = []
    if empty_class == "zero":
        zeroed = [n for n, h in zip(names, have) if not h]
        out[~have] = 0.0
        class_avg = out.mean(0)
        weighted = (out * weights[:, None]).sum(0)
        have = np.ones_like(have)
    elif have.any():
        class_avg = out[have].mean(0)
        weighted = (out[have] * weights[have, None]).sum(0) / weights[have].sum()
    else:
        class_avg = weighted = np.full(3, np.nan)
    df = pd.DataFrame(out, index=pd.Index(names, name="Label Name"), columns=["mAP", "mHR", "mRR"])
    df.loc[CLASS_AVERAGE] = class_avg
    df.loc[CLASS_WEIGHTED_AVERAGE] = weighted
    df.attrs.update(query_counts=dict(zip(names, counts.tolist())), weights=weights.tolist(),
                    excluded=[n for n, h in zip(names, have) if not h], zeroed=zeroed, empty_class=empty_class,
                    k=int(k), skip=bool(skip_no_hit))
    return df


def per_query_metrics(labels, neighbors, k: int, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (query, positive class), in class order then query order — the original's CSV layout:
    label_name, target_hit (list of bools), target_indices (list), query_indices, AP, HR, RR."""
    lab, nb = _check(labels, neighbors, k)
    names = default_names(class_names, lab.shape[1])
    ap, hr, rr, _, rel = _per_query(lab, nb)
    frames = []
    for c, name in enumerate(names):
        q = np.flatnonzero(lab[:, c])
        frames.append(pd.DataFrame({
            "label_name": name, "target_hit": [r.tolist() for r in rel[q, :, c]],
            "target_indices": [r.tolist() for r in nb[q]], "query_indices": q,
            "AP": ap[q, c], "HR": hr[q, c], "RR": rr[q, c]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def knn_search(embeddings, k: int, exclude_self: bool = True, faithful_drop_first: bool = False,
               database=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN with faiss ``IndexFlatIP`` on L2-normalised float32 copies.

    Query set = database = ``embeddings`` (N, D) unless ``database`` (M, D) is given (then nothing is excluded).
    With query = database it searches k+1 and then:
    - ``faithful_drop_first=True``: drops the first result, as the original did (wrong when an identical image
      ranks above the query itself); takes precedence over ``exclude_self``;
    - ``exclude_self=True`` (default): removes the query's own index wherever it appears, keeping the first k
      of the rest (correct with duplicates);
    - neither: returns the top k including the query.
    Returns (scores (N, k) float32, indices (N, k) int64), best first.
    """
    import faiss

    k = int(k)
    q = np.ascontiguousarray(to_numpy(embeddings), dtype=np.float32).copy()
    if q.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("embeddings contain NaN or inf")
    faiss.normalize_L2(q)
    if database is not None:
        db = np.ascontiguousarray(to_numpy(database), dtype=np.float32).copy()
        if db.ndim != 2 or db.shape[1] != q.shape[1]:
            raise ValueError(f"database must be (M, {q.shape[1]}), got shape {db.shape}")
        faiss.normalize_L2(db)
        same = False
    else:
        db, same = q, True
    if k < 1 or k > db.shape[0] - (1 if same and (exclude_self or faithful_drop_first) else 0):
        raise ValueError(f"k={k} is out of range for a database of {db.shape[0]} items")
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    drop = same and (exclude_self or faithful_drop_first)
    scores, idx = index.search(q, k + 1 if drop else k)
    if not drop:
        return scores, idx.astype(np.int64)
    if faithful_drop_first:
        return np.ascontiguousarray(scores[:, 1:]), idx[:, 1:].astype(np.int64)
    is_self = idx == np.arange(q.shape[0])[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]       # non-self first, rank order kept
    return (np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1).astype(np.int64))


def image_labels(anatomy_labels) -> np.ndarray:
    """(N, 18, 9) anatomy x finding labels -> (N, 9) image labels (OR over anatomies)."""
    a = binary_labels(to_numpy(anatomy_labels), "anatomy_labels")
    if a.ndim != 3:
        raise ValueError(f"anatomy_labels must be (N, 18, 9), got shape {a.shape}")
    return a.any(1).astype(np.int64)


def side_aware_labels(anatomy_labels) -> np.ndarray:
    """(N, 18, 9) -> (N, 17) labels in ``SIDE_AWARE_CLASSES`` order.

    Columns 0-7: "right <finding>" = OR over anatomies 0-6 (right lung ... right costophrenic angle) for the 8
    findings other than enlarged cardiac silhouette, in ImaGenome finding order; columns 8-15: "left <finding>"
    = OR over anatomies 7-13; column 16: "enlarged cardiac silhouette" = OR over all 18 anatomies.
    """
    a = binary_labels(to_numpy(anatomy_labels), "anatomy_labels")
    if a.ndim != 3 or a.shape[1:] != (18, len(IMAGENOME_FINDINGS)):
        raise ValueError(f"anatomy_labels must be (N, 18, {len(IMAGENOME_FINDINGS)}), got shape {a.shape}")
    sided = [IMAGENOME_FINDINGS.index(f) for f in _SIDED]
    right = a[:, 0:7][:, :, sided].any(1)
    left = a[:, 7:14][:, :, sided].any(1)
    ecs = a[:, :, IMAGENOME_FINDINGS.index(_ECS)].any(1, keepdims=True)
    return np.concatenate([right, left, ecs], axis=1).astype(np.int64)


def _norm_sex(v) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip().upper()
    return {"MALE": "M", "FEMALE": "F"}.get(s, s[:1] if s else None)


def subgroup_mask(frame: pd.DataFrame, view=None, sex=None, age_bin=None) -> np.ndarray:
    """Boolean (N,) mask of the rows in a subgroup; ``None`` means "any".

    ``view``: "AP", "PA" (or a list) matched against column ``view`` (case-insensitive);
    ``sex``: "M"/"F" (also "male"/"female") against column ``sex``;
    ``age_bin``: "20-40", "40-60", "60-80", "80-100" or a (lo, hi) pair against column ``age``; bins are
    half-open [lo, hi) except that the last bin includes 100. Rows with a missing value are outside any subgroup
    that filters on it. Apply the mask to queries AND database and re-run the search on the subset.
    """
    m = np.ones(len(frame), dtype=bool)

    def col(name):
        if name not in frame.columns:
            raise KeyError(f"subgroup filter needs column {name!r}; the frame has {list(frame.columns)}")
        return frame[name]

    if view is not None:
        views = {str(v).upper() for v in ([view] if isinstance(view, str) else view)}
        m &= col("view").astype(str).str.upper().isin(views).to_numpy()
    if sex is not None:
        want = {_norm_sex(s) for s in ([sex] if isinstance(sex, str) else sex)}
        m &= col("sex").map(_norm_sex).isin(want).to_numpy()
    if age_bin is not None:
        if isinstance(age_bin, str):
            if age_bin not in AGE_BINS:
                raise ValueError(f"unknown age bin {age_bin!r}; use one of {list(AGE_BINS)} or (lo, hi)")
            lo, hi = AGE_BINS[age_bin]
        else:
            lo, hi = age_bin
        age = pd.to_numeric(col("age"), errors="coerce").to_numpy(dtype=np.float64)
        inside = (age >= lo) & ((age < hi) | ((hi == 100) & (age == 100)))
        m &= inside & np.isfinite(age)
    return m
