"""Speed of the CheXtriev retrieval metrics: the vectorised ``retrieval_metrics`` vs a per-query Python loop.

    python -m benchmarks --only retrieval [-- --n 3191 --classes 9 --k 10 --reps 20]

The default shape is CheXtriev's test set (3,191 images x 9 ImaGenome findings, k = 10). The baseline loops over
classes and their query images, one ``list`` of hits at a time, the way a per-query implementation (such as the
original's) computes AP / HR / RR. Both get the same random labels (20 % positives) and neighbour lists, the
benchmark checks they agree, then prints the median time of each and the ratio (loop / vectorised) of one run.
``knn_search`` (exact faiss inner product over N x 512 embeddings) is timed beside them for scale.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from shared.metrics.retrieval import knn_search, retrieval_metrics


def per_query_loop(labels: np.ndarray, neighbors: np.ndarray, k: int) -> np.ndarray:
    """(C, 3) mAP, mHR, mRR @k per class, one query at a time (the baseline; skip_no_hit=False)."""
    table = np.full((labels.shape[1], 3), np.nan)
    for c in range(labels.shape[1]):
        rows = []
        for q in np.flatnonzero(labels[:, c]):
            hit = [bool(labels[i, c]) for i in neighbors[q, :k]]
            ranks = [r + 1 for r, h in enumerate(hit) if h]
            ap = sum((j + 1) / r for j, r in enumerate(ranks)) / len(ranks) if ranks else 0.0
            rows.append((ap, len(ranks) / k, 1.0 / ranks[0] if ranks else 0.0))
        if rows:
            table[c] = np.mean(rows, axis=0)
    return table


def _median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.retrieval", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3191, help="queries = database images")
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dim", type=int, default=512, help="embedding size for the knn_search timing")
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args(argv)

    rng = np.random.default_rng(0)
    labels = (rng.random((a.n, a.classes)) < 0.2).astype(np.int8)
    embeddings = rng.standard_normal((a.n, a.dim)).astype(np.float32)
    _, neighbors = knn_search(embeddings, a.k)

    vectorised = retrieval_metrics(labels, neighbors, a.k).iloc[:a.classes].to_numpy()
    np.testing.assert_allclose(vectorised, per_query_loop(labels, neighbors, a.k), equal_nan=True)

    seconds = {
        "retrieval_metrics": _median_seconds(lambda: retrieval_metrics(labels, neighbors, a.k), a.reps),
        "per_query_loop": _median_seconds(lambda: per_query_loop(labels, neighbors, a.k), max(1, a.reps // 4)),
        "knn_search": _median_seconds(lambda: knn_search(embeddings, a.k), max(1, a.reps // 4)),
    }
    ratio = seconds["per_query_loop"] / seconds["retrieval_metrics"]
    print(f"retrieval metrics on {a.n} queries x {a.classes} classes, k={a.k} (median of {a.reps}):")
    print("| what | ms |\n|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s * 1e3:.1f} |")
    print(f"vectorised is {ratio:.0f}x faster than the per-query loop (same run, same inputs, same numbers)")
    return {"ms": {n: s * 1e3 for n, s in seconds.items()}, "speedup_vs_loop": ratio}


if __name__ == "__main__":
    main()
