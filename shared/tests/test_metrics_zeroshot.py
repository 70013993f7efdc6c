"""shared.metrics.zeroshot: de-duplication, ranks and Recall@k both ways, CheXpert5x200 accuracy."""
import numpy as np
import pytest
import torch

from shared.metrics.zeroshot import (binary_prompt_probability, dedup_texts, image_text_retrieval,
                                     mean_rank, multiclass_accuracy, ranks, recall_at_k, retrieval_recall)


def brute_rank(sim, correct_sets):
    out = []
    for i, s in enumerate(sim):
        order = np.argsort(-s, kind="stable")
        out.append(min(int(np.flatnonzero(order == j)[0]) + 1 for j in correct_sets[i]))
    return np.array(out)


def test_dedup_texts():
    u, idx = dedup_texts(["b", "a", "b", "c", "a"])
    assert u == ["b", "a", "c"] and idx.tolist() == [0, 1, 0, 2, 1]
    with pytest.raises(TypeError, match="text 1"):
        dedup_texts(["a", None])


def test_ranks_and_recall_match_brute_force():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(40, 25))
    t = rng.integers(0, 25, size=40)
    r = ranks(torch.tensor(sim), torch.tensor(t))
    np.testing.assert_array_equal(r, brute_rank(sim, [{x} for x in t]))
    out = retrieval_recall(sim, t, ks=(1, 5, 10))
    assert set(out) == {"R@1", "R@5", "R@10", "mean_rank", "median_rank"}
    assert out["R@5"] == pytest.approx((r <= 5).mean()) and out["mean_rank"] == pytest.approx(r.mean())
    assert recall_at_k(sim, t, ks=(1,)) == {"R@1": out["R@1"]}
    assert mean_rank(sim, t) == out["mean_rank"]
    sets = [{int(x), int((x + 3) % 25)} for x in t]
    np.testing.assert_array_equal(ranks(sim, sets), brute_rank(sim, sets))
    # perfect retrieval
    assert retrieval_recall(np.eye(5), np.arange(5))["R@1"] == 1.0


def test_ties_count_against_the_query():
    """A collapsed model (all similarities equal) must score the worst rank, not a perfect R@1."""
    flat = np.zeros((4, 6))
    assert ranks(flat, np.arange(4)).tolist() == [6, 6, 6, 6]
    assert retrieval_recall(flat, np.arange(4), ks=(1, 5))["R@1"] == 0.0
    sim = np.array([[0.9, 0.5, 0.9, 0.1]])
    assert ranks(sim, [0]).tolist() == [2]              # one wrong item ties the correct one
    assert ranks(sim, [{0, 2}]).tolist() == [1]         # both tied items are correct


def test_image_text_retrieval_with_duplicates():
    texts = ["effusion", "normal", "normal", "edema"]
    u, ti = dedup_texts(texts)
    sim = np.array([[0.9, 0.1, 0.0],      # image 0 -> "effusion" first
                    [0.2, 0.8, 0.1],      # image 1 -> "normal"
                    [0.7, 0.6, 0.0],      # image 2 -> "normal" at rank 2
                    [0.1, 0.2, 0.3]])     # image 3 -> "edema"
    out = image_text_retrieval(sim, ti, ks=(1, 2))
    assert out["i2t"]["R@1"] == 0.75 and out["i2t"]["R@2"] == 1.0
    # t2i: "effusion" ranks image 0 first; "normal" finds image 1 first; "edema": image 3 (0.3) ranks 1st
    assert out["t2i"]["R@1"] == 1.0 and out["t2i"]["mean_rank"] == 1.0


def test_multiclass_accuracy():
    y = np.array([0, 0, 1, 1, 1, 2])
    s = np.eye(3)[[0, 1, 1, 1, 0, 2]]
    df = multiclass_accuracy(y, s, ["A", "B", "C"])
    assert df.loc["A", "accuracy"] == 0.5 and df.loc["B", "accuracy"] == pytest.approx(2 / 3)
    assert df.loc["macro", "accuracy"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert df.loc["micro", "accuracy"] == pytest.approx(4 / 6) and df.loc["micro", "n"] == 6
    p = binary_prompt_probability([0.2, 0.5], [0.2, 0.1])
    np.testing.assert_allclose(p, [0.5, 1 / (1 + np.exp(0.4))])
