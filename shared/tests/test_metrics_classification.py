"""shared.metrics.classification: AUROC/AP via scikit-learn, NaN policy, threshold metrics, bootstrap."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import (average_precision_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

from shared.metrics.classification import (bootstrap_ci, bootstrap_samples, classification_table,
                                           per_class_auroc, render_table)


def data(n=200, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(int)
    s = np.round(y * 0.4 + rng.random((n, c)), 1)          # rounded: many ties
    return y, s


def test_auroc_matches_sklearn_and_nan_policy():
    y, s = data()
    y[:, 2] = 0                                             # no positives
    y[:, 3] = 1                                             # no negatives
    a = per_class_auroc(torch.tensor(y), torch.tensor(s, dtype=torch.float32))
    assert a[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0].astype(np.float32)))
    assert np.isnan(a[2]) and np.isnan(a[3])
    df = classification_table(y, s, ["A", "B", "C", "D"])
    assert list(df.index) == ["A", "B", "C", "D", "mean"]
    assert list(df.columns) == ["auroc", "ap", "f1", "accuracy", "sensitivity", "specificity", "precision"]
    assert df.attrs["excluded"] == ["C", "D"]
    assert df.loc["mean", "auroc"] == pytest.approx(np.mean(a[:2]))
    # every column's mean is over the same non-excluded classes
    assert df.loc["mean", "accuracy"] == pytest.approx(df.loc[["A", "B"], "accuracy"].mean())
    assert df.loc["A", "ap"] == pytest.approx(average_precision_score(y[:, 0], s[:, 0]))
    text = render_table(df)
    assert "excluded from the mean" in text and "C, D" in text and "| mean |" in text


def test_threshold_metrics_match_sklearn():
    y, s = data(seed=1)
    df = classification_table(y, s, threshold=0.6)
    for c in range(y.shape[1]):
        p = (s[:, c] >= 0.6).astype(int)
        row = df.loc[f"class_{c}"]
        assert row["f1"] == pytest.approx(f1_score(y[:, c], p, zero_division=0))
        assert row["precision"] == pytest.approx(precision_score(y[:, c], p, zero_division=0))
        assert row["sensitivity"] == pytest.approx(recall_score(y[:, c], p))
        assert row["specificity"] == pytest.approx(recall_score(1 - y[:, c], 1 - p))
        assert row["accuracy"] == pytest.approx((p == y[:, c]).mean())
    assert df.attrs["excluded"] == []
    # per-class thresholds
    df2 = classification_table(y, s, threshold=[0.6, 0.6, 0.6, 0.6])
    pd.testing.assert_frame_equal(df, df2, check_like=True)


def test_bad_input_is_named():
    y, s = data()
    with pytest.raises(ValueError, match="same shape"):
        classification_table(y, s[:, :3])
    with pytest.raises(ValueError, match="0/1"):
        per_class_auroc(y * 2, s)
    s[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3, class 1"):
        per_class_auroc(y, s)


@pytest.mark.parametrize("metric,fn", [("auroc", roc_auc_score), ("ap", average_precision_score)])
def test_vectorised_bootstrap_equals_sklearn_on_resamples(metric, fn):
    y, s = data(n=60, c=2, seed=2)
    fast = bootstrap_samples(y, s, metric, n=25, seed=3, block_elems=600)   # several blocks
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 60, size=(25, 60))
    for i in range(25):
        for c in range(2):
            yi, si = y[idx[i], c], s[idx[i], c]
            want = fn(yi, si) if 0 < yi.sum() < 60 else np.nan
            np.testing.assert_allclose(fast[i, c], want, rtol=1e-12, atol=1e-12)
    # a callable metric takes the same resamples
    slow = bootstrap_samples(y, s, fn, n=25, seed=3, block_elems=600)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_bootstrap_ci():
    y, s = data(n=300, c=3, seed=4)
    y[:, 2] = 0
    ci = bootstrap_ci(y, s, n=200, seed=0, class_names=["a", "b", "c"])
    assert list(ci.index) == ["a", "b", "c", "mean"]
    assert (ci.loc[["a", "b", "mean"], "low"] <= ci.loc[["a", "b", "mean"], "estimate"]).all()
    assert (ci.loc[["a", "b", "mean"], "estimate"] <= ci.loc[["a", "b", "mean"], "high"]).all()
    assert np.isnan(ci.loc["c", "estimate"]) and ci.attrs["excluded"] == ["c"]
    assert ci.loc["mean", "estimate"] == pytest.approx(ci.loc[["a", "b"], "estimate"].mean())
    again = bootstrap_ci(y, s, n=200, seed=0, class_names=["a", "b", "c"])
    pd.testing.assert_frame_equal(ci, again)
