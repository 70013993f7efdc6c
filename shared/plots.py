"""Pictures more than one method draws. Matplotlib's Agg backend; nothing here needs a display."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# 14 NIH classes must stay apart in grey print and for colour-blind readers: colour AND line style differ
LINE_STYLES = ("-", "--", "-.", ":")


def curve_styles(n: int) -> list[dict]:
    """``n`` distinct (colour, line style) pairs: tab10 colours, the style advancing every 10 curves and per curve."""
    import matplotlib
    colours = matplotlib.colormaps["tab10"].colors
    return [{"color": colours[i % 10], "linestyle": LINE_STYLES[(i + i // 10) % 4]} for i in range(n)]


def roc_plot(y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str], path, title: str) -> Path:
    """One ROC curve per class that has both labels in ``y_true`` (N, C); legend with AUROC; written to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(7, 6))
    for j, (name, style) in enumerate(zip(names, curve_styles(len(names)))):
        if 0 < y_true[:, j].sum() < len(y_true):
            fpr, tpr, _ = roc_curve(y_true[:, j], y_score[:, j])
            auc = roc_auc_score(y_true[:, j], y_score[:, j])
            ax.plot(fpr, tpr, lw=1.3, label=f"{name} ({auc:.3f})", **style)
    ax.plot([0, 1], [0, 1], color="gray", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="class (AUROC)", title_fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
