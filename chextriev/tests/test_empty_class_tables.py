"""test.py's tables use the original's averaging for classes without query rows (counted as 0.0, still
averaged) and say so; a subgroup without any positive image of a class is where this matters."""
import numpy as np
import pandas as pd
import pytest

from shared.data.labels import IMAGENOME_FINDINGS
from shared.metrics.retrieval import CLASS_AVERAGE, retrieval_metrics, subgroup_mask

from chextriev.test import evaluate_embeddings, search


@pytest.mark.parametrize("conv", ["zero", "exclude"])
def test_subgroup_and_tables_follow_the_empty_class_convention(tmp_path, conv):
    rng = np.random.default_rng(0)
    n = 40
    anatomy = (rng.random((n, 18, 9)) < 0.02).astype(np.int64)
    view = np.array(["AP", "PA"] * (n // 2))
    pneumo = IMAGENOME_FINDINGS.index("pneumothorax")
    anatomy[:, :, pneumo] = 0
    anatomy[np.flatnonzero(view == "PA")[:3], 0, pneumo] = 1       # pneumothorax only in PA images
    frame = pd.DataFrame({"image_id": [f"i{j}" for j in range(n)], "view": view})
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    res = evaluate_embeddings(emb, anatomy, frame, tmp_path, ks=(3,), drop_self="id", side_aware=False,
                              skip_modes=(False,), subgroups=True, verbose=False, empty_class=conv)
    sub = res["subgroups"].set_index("subgroup")
    mask = subgroup_mask(frame, view="AP")
    _, nb = search(emb[mask], 3, "id")
    t = retrieval_metrics(anatomy[mask].any(1).astype(np.int64), nb, 3, class_names=IMAGENOME_FINDINGS,
                          empty_class=conv)
    assert sub.loc["view=AP", "mAP"] == pytest.approx(t.loc[CLASS_AVERAGE, "mAP"])
    assert "pneumothorax" in sub.loc["view=AP", "empty_classes"] and sub.loc["view=AP", "empty_class"] == conv
    per_class = t.loc[IMAGENOME_FINDINGS, "mAP"].to_numpy(dtype=float)
    if conv == "zero":      # averaged over all 9 with the empty ones as 0
        assert sub.loc["view=AP", "mAP"] == pytest.approx(per_class.sum() / 9)
    else:
        assert sub.loc["view=AP", "mAP"] == pytest.approx(np.nanmean(per_class))
    note = (tmp_path / "table_9cls_top3_skip0.txt").read_text().strip().splitlines()[-1]
    assert note.startswith(f"averages: empty_class={conv}")
