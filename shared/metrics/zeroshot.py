"""Zero-shot classification and image-text retrieval metrics (CXR-CLIP protocol).

    texts_u, text_of = dedup_texts(report_texts)                  # one row per distinct text
    sim = img_emb @ txt_emb_u.T                                    # (N_img, N_text_unique) cosine similarities
    both = image_text_retrieval(sim, text_of)                      # {"i2t": {...}, "t2i": {...}}
    retrieval_recall(sim, text_of)                                 # {"R@1", "R@5", "R@10", "mean_rank", "median_rank"}
    multiclass_accuracy(y_idx, class_scores, CHEXPERT_COMPETITION) # per-class + "macro" + "micro" (the headline)

Ranks: rank 1 = best. A query's rank is 1 + the number of database items with a STRICTLY higher similarity than
its best correct item (ties are resolved in the query's favour; after text de-duplication exact ties between
different items are rare). With several correct items (a list of sets, e.g. text->image where one text belongs to
many images) the best-ranked correct item counts. R@k = fraction of queries with rank <= k.

Texts are de-duplicated first so that identical reports are one retrieval target (an image's retrieval is correct
when it finds the text, whichever image it came from).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ._util import default_names, to_numpy

__all__ = ["dedup_texts", "ranks", "retrieval_recall", "recall_at_k", "mean_rank", "image_text_retrieval",
           "multiclass_accuracy", "binary_prompt_probability"]


def dedup_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in first-occurrence order, and for each input text the index of its distinct text."""
    first: dict[str, int] = {}
    index = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
        index[i] = first.setdefault(t, len(first))
    return list(first), index


def _correct_matrix(target, nq: int, nd: int) -> np.ndarray | None:
    """None for (Nq,) int targets; a (Nq, Nd) bool matrix for a list of sets."""
    if isinstance(target, (list, tuple)) and len(target) and isinstance(target[0], (set, frozenset, list, tuple)):
        if len(target) != nq:
            raise ValueError(f"{len(target)} target sets for {nq} queries")
        lengths = np.fromiter((len(s) for s in target), dtype=np.int64, count=nq)
        if (lengths == 0).any():
            raise ValueError(f"query {int(np.argmax(lengths == 0))} has no correct item")
        rows = np.repeat(np.arange(nq), lengths)
        cols = np.fromiter((j for s in target for j in s), dtype=np.int64, count=int(lengths.sum()))
        if cols.min() < 0 or cols.max() >= nd:
            raise ValueError(f"target index out of range 0..{nd - 1}")
        m = np.zeros((nq, nd), dtype=bool)
        m[rows, cols] = True
        return m
    return None


def ranks(similarity, target) -> np.ndarray:
    """Rank (1 = best) of each query's best correct item. ``similarity`` (Nq, Nd); ``target`` (Nq,) ints or a
    list of Nq sets of database indices. Ties count against the query (rank = 1 + the wrong items scoring at
    least as high), so a collapsed model with constant similarities gets the worst rank, not a perfect one."""
    sim = np.asarray(to_numpy(similarity), dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (Nq, Nd), got shape {sim.shape}")
    if np.isnan(sim).any():
        raise ValueError("similarity contains NaN")
    nq, nd = sim.shape
    correct = _correct_matrix(target, nq, nd)
    if correct is None:
        t = np.asarray(to_numpy(target)).astype(np.int64).reshape(-1)
        if t.shape[0] != nq:
            raise ValueError(f"target has {t.shape[0]} entries for {nq} queries")
        if t.size and (t.min() < 0 or t.max() >= nd):
            raise ValueError(f"target index out of range 0..{nd - 1}")
        correct = np.zeros((nq, nd), dtype=bool)
        correct[np.arange(nq), t] = True
    best = np.where(correct, sim, -np.inf).max(1)
    return ((sim >= best[:, None]) & ~correct).sum(1) + 1


def retrieval_recall(similarity, target, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """{"R@k": fraction of queries with rank <= k for k in ks, "mean_rank", "median_rank"}."""
    r = ranks(similarity, target)
    out = {f"R@{int(k)}": float((r <= int(k)).mean()) for k in ks}
    out["mean_rank"] = float(r.mean())
    out["median_rank"] = float(np.median(r))
    return out


def recall_at_k(similarity, target, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """{"R@k": ...} only (see ``retrieval_recall``)."""
    r = ranks(similarity, target)
    return {f"R@{int(k)}": float((r <= int(k)).mean()) for k in ks}


def mean_rank(similarity, target) -> float:
    return float(ranks(similarity, target).mean())


def image_text_retrieval(similarity, text_index, ks: Iterable[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """Both directions from one (N_img, N_text_unique) similarity and ``text_index`` (N_img,) from dedup_texts.

    i2t: each image's correct text is ``text_index[i]``. t2i: each distinct text's correct images are all images
    whose text it is (only texts that some image has are queries).
    """
    sim = np.asarray(to_numpy(similarity))
    ti = np.asarray(to_numpy(text_index)).astype(np.int64)
    ks = tuple(ks)
    i2t = retrieval_recall(sim, ti, ks)
    order = np.argsort(ti, kind="stable")
    texts, starts = np.unique(ti[order], return_index=True)
    groups = [set(g.tolist()) for g in np.split(order, starts[1:])]
    t2i = retrieval_recall(sim.T[texts], groups, ks)
    return {"i2t": i2t, "t2i": t2i}


def multiclass_accuracy(y_true_idx, scores, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Argmax classification (CheXpert5x200 zero-shot): per-class accuracy (= recall of the class), "macro"
    (mean over classes with samples) and "micro" (overall accuracy, the CXR-CLIP headline).

    Returns a DataFrame with columns ``accuracy`` and ``n`` (samples of the class; total for macro/micro).
    """
    s = np.asarray(to_numpy(scores), dtype=np.float64)
    y = np.asarray(to_numpy(y_true_idx)).astype(np.int64).reshape(-1)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"scores must be (N, C) with N = {y.shape[0]}, got shape {s.shape}")
    C = s.shape[1]
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"y_true_idx out of range 0..{C - 1}")
    names = default_names(class_names, C)
    correct = s.argmax(1) == y
    n = np.bincount(y, minlength=C)
    hit = np.bincount(y, weights=correct, minlength=C)
    acc = np.full(C, np.nan)
    acc[n > 0] = hit[n > 0] / n[n > 0]
    df = pd.DataFrame({"accuracy": acc, "n": n}, index=pd.Index(names, name="class"))
    df.loc["macro"] = [np.nanmean(acc) if (n > 0).any() else np.nan, int(n.sum())]
    df.loc["micro"] = [float(correct.mean()) if y.size else np.nan, int(n.sum())]
    df["n"] = df["n"].astype(np.int64)
    df.attrs["excluded"] = [c for c, k in zip(names, n) if k == 0]
    return df


def binary_prompt_probability(sim_negative, sim_positive) -> np.ndarray:
    """p(positive) = softmax over the two prompt similarities, no temperature (CXR-CLIP's binary zero-shot)."""
    neg = np.asarray(to_numpy(sim_negative), dtype=np.float64)
    pos = np.asarray(to_numpy(sim_positive), dtype=np.float64)
    return 1.0 / (1.0 + np.exp(neg - pos))
