"""Pictures of an evaluation: the CheXpert5x200 zero-shot confusion matrix and an image->text retrieval strip."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from shared.data.images import load_image


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_confusion_matrix(path: str | Path, targets: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                          title: str = "CheXpert5x200 zero-shot") -> Path:
    """Rows: true class, columns: argmax of ``scores``; cells count images."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ConfusionMatrixDisplay.from_predictions(targets, scores.argmax(1), labels=range(len(classes)),
                                            display_labels=list(classes), ax=ax, colorbar=False,
                                            xticks_rotation=30)
    ax.set_title(f"{title}: accuracy {np.mean(scores.argmax(1) == targets):.3f} on {len(targets)} images")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_retrieval_strip(path: str | Path, image_paths: Sequence[str], similarity: np.ndarray, texts: Sequence[str],
                         target: np.ndarray, queries: int = 3, k: int = 5) -> Path:
    """One row per query image (the first ``queries``): the image and its top-``k`` texts by similarity; the true
    report is marked (and, when it is not in the top k, shown below with its rank)."""
    plt = _pyplot()
    rows = min(queries, len(image_paths))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.2 * rows), gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
    for row, (image_ax, text_ax) in enumerate(axes):
        order = np.argsort(-similarity[row], kind="stable")
        rank = int(np.flatnonzero(order == target[row])[0]) + 1
        image_ax.imshow(load_image(image_paths[row]), cmap="gray")
        image_ax.set_title(f"query {row + 1}: true report at rank {rank}", fontsize=9)
        image_ax.axis("off")
        text_ax.axis("off")
        lines = [(order[i], f"{i + 1}.") for i in range(min(k, len(order)))]
        if rank > k:
            lines.append((target[row], f"{rank}."))
        for y, (text_index, label) in enumerate(lines):
            true = text_index == target[row]
            body = textwrap.shorten(texts[text_index], 150, placeholder=" ...")
            text_ax.text(0, 1 - y / (k + 1), f"{'✔' if true else ' '} {label} ({similarity[row, text_index]:.3f}) "
                         + "\n      ".join(textwrap.wrap(body, 95)), va="top", fontsize=8,
                         color="green" if true else "black", weight="bold" if true else "normal",
                         transform=text_ax.transAxes)
    fig.suptitle("image -> text retrieval: top texts per image (true report in green)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
