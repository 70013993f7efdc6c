"""shared.metrics.retrieval: CheXtriev's own output reproduced to 3 decimals, plus the search and helpers."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.data.labels import IMAGENOME_FINDINGS
from shared.metrics.retrieval import (CLASS_AVERAGE, CLASS_WEIGHTED_AVERAGE, SIDE_AWARE_CLASSES, knn_search,
                                      per_query_metrics, retrieval_metrics, side_aware_labels, subgroup_mask)

FIX = Path(__file__).parent / "fixtures" / "chextriev"
N_TEST = 3191


@pytest.fixture(scope="module")
def original():
    """Rebuild the test label matrix and ranked neighbours from the original's per-query CSV.

    Image labels = the classes an image is a query for, plus the classes in which it is retrieved as a hit
    (target_hit). The second source matters for one image: the original's ``query_indices`` column holds the
    FIRST search result (assumed to be the query itself). Test images 1517 and 2878 are identical, so 1517's
    rows say 2878 and its ranking still contains 1517 — the faithful drop-first behaviour, which the printed
    table includes. Rows of a class come in ascending query order, so the true query of each row is the c-th
    positive image of its class.
    """
    rows = pd.read_csv(FIX / "resnet50_orig_9cls_top10_rankings.csv.gz")
    assert len(rows) == 8533
    names = list(dict.fromkeys(rows["label_name"]))
    assert names == IMAGENOME_FINDINGS
    q = rows["query_indices"].to_numpy()
    cls = rows["label_name"].map(names.index).to_numpy()
    targets = np.array([json.loads(s) for s in rows["target_indices"]], dtype=np.int64)
    hit = np.array([json.loads(s.lower()) for s in rows["target_hit"]], dtype=bool)
    n = max(q.max(), targets.max()) + 1
    assert n == N_TEST
    labels = np.zeros((n, len(names)), dtype=np.int64)
    labels[q, cls] = 1
    labels[targets[hit], np.broadcast_to(cls[:, None], targets.shape)[hit]] = 1
    assert (labels[targets, cls[:, None]] == hit).all()          # every relevance flag agrees with the labels
    assert (labels.sum(1) == 0).sum() == 372                     # the no-finding distractors
    assert labels.sum(0).tolist() == [2679, 1340, 1241, 1212, 819, 96, 334, 169, 643]
    true_q = np.empty_like(q)
    for c in range(len(names)):
        true_q[cls == c] = np.flatnonzero(labels[:, c])
    moved = true_q != q
    assert set(q[moved]) == {2878} and set(true_q[moved]) == {1517}
    neighbors = np.full((n, targets.shape[1]), -1, dtype=np.int64)
    neighbors[true_q] = targets
    assert (neighbors[true_q] == targets).all()                  # one ranking per query image
    return rows, labels, neighbors, names, true_q


def parse_printed_table(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] == "Label Name":
            continue
        out[cells[0]] = [float(x) for x in cells[1:]]
    return pd.DataFrame.from_dict(out, orient="index", columns=["mAP", "mHR", "mRR"])


def test_reproduces_original_table(original):
    rows, labels, neighbors, names, _ = original
    expected = parse_printed_table(FIX / "resnet50_orig_9cls_top10_table.txt")
    assert len(expected) == 11 and CLASS_AVERAGE in expected.index and CLASS_WEIGHTED_AVERAGE in expected.index
    ours = retrieval_metrics(labels, neighbors, k=10, class_names=names)
    assert list(ours.index) == names + [CLASS_AVERAGE, CLASS_WEIGHTED_AVERAGE]
    for name in expected.index:
        for col in ["mAP", "mHR", "mRR"]:
            assert round(ours.loc[name, col], 3) == expected.loc[name, col], (name, col, ours.loc[name, col])
    weights = np.load(FIX / "test_weights.npy")
    np.testing.assert_allclose(ours.attrs["weights"], weights, rtol=1e-6)
    assert sum(ours.attrs["query_counts"].values()) == 8533


def test_per_query_values_match_original_csv(original):
    rows, labels, neighbors, names, true_q = original
    pq = per_query_metrics(labels, neighbors, k=10, class_names=names)
    assert list(pq["label_name"]) == list(rows["label_name"])
    assert (pq["query_indices"].to_numpy() == true_q).all()
    for col in ["AP", "HR", "RR"]:
        np.testing.assert_allclose(pq[col].to_numpy(), rows[col].to_numpy(), rtol=1e-12, atol=1e-12)
    hits = [json.loads(s.lower()) for s in rows["target_hit"]]
    assert [list(map(bool, h)) for h in pq["target_hit"]] == hits


def test_definitions_by_hand():
    # 4 images, 1 class; query 0 positive, its neighbours hit at ranks 2 and 3 of k=3
    labels = np.array([[1], [0], [1], [1]])
    nb = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [1, 2, 0]])
    df = retrieval_metrics(labels, nb, k=3)
    ap = {0: (1 / 2 + 2 / 3) / 2, 2: (1 / 1 + 2 / 3) / 2, 3: (1 / 2 + 2 / 3) / 2}
    rr = {0: 1 / 2, 2: 1.0, 3: 1 / 2}
    assert df.loc["class_0", "mAP"] == pytest.approx(np.mean(list(ap.values())))
    assert df.loc["class_0", "mHR"] == pytest.approx(2 / 3)
    assert df.loc["class_0", "mRR"] == pytest.approx(np.mean(list(rr.values())))
    # zero-hit query rows count as 0, or are dropped in skip mode
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    nb = np.array([[3, 1], [3, 0], [0, 1], [0, 1]])
    plain = retrieval_metrics(labels, nb, k=2)
    skip = retrieval_metrics(labels, nb, k=2, skip_no_hit=True)
    assert plain.loc["class_0", "mAP"] == pytest.approx(0.5) and skip.loc["class_0", "mAP"] == 1.0
    assert np.isnan(skip.loc["class_1", "mAP"]) and skip.attrs["excluded"] == ["class_1"]
    assert plain.loc["class_1", "mRR"] == 0.0
    assert plain.attrs["weights"] == [2 / 3, 1 / 3]
    with pytest.raises(ValueError, match="k=3"):
        retrieval_metrics(labels, nb, k=3)


def test_knn_search_self_exclusion_with_duplicates():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb[7] = emb[3]                      # two identical images
    s, i = knn_search(emb, k=5)
    assert i.shape == (50, 5) and s.dtype == np.float32
    assert not (i == np.arange(50)[:, None]).any()
    assert i[3, 0] == 7 and i[7, 0] == 3
    assert (np.diff(s, axis=1) <= 1e-6).all()
    # the faithful variant drops the first result, whichever it is
    s2, i2 = knn_search(emb, k=5, faithful_drop_first=True)
    ok = np.setdiff1d(np.arange(50), [3, 7])
    np.testing.assert_array_equal(i2[ok], i[ok])
    assert {i2[3, 0], i2[7, 0]} <= {3, 7} and (i2[3, 0] == 3 or i2[7, 0] == 7)
    # brute force agrees
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    np.testing.assert_allclose(s[ok], -np.sort(-sim[ok], axis=1)[:, :5], atol=1e-5)
    # separate database, nothing excluded
    _, i3 = knn_search(emb[:5], k=1, database=emb)
    np.testing.assert_array_equal(i3[:, 0], [0, 1, 2, 3, 4])


def test_side_aware_labels():
    a = np.zeros((3, 18, 9), dtype=int)
    a[0, 2, 0] = 1          # right upper lung zone, lung opacity
    a[1, 12, 1] = 1         # left hilar structures, pleural effusion
    a[2, 16, 3] = 1         # cardiac silhouette, enlarged cardiac silhouette
    a[2, 15, 0] = 1         # upper mediastinum: not a side
    out = side_aware_labels(a)
    assert out.shape == (3, 17) and len(SIDE_AWARE_CLASSES) == 17
    assert SIDE_AWARE_CLASSES[0] == "right lung opacity" and SIDE_AWARE_CLASSES[-1] == "enlarged cardiac silhouette"
    assert out[0].nonzero()[0].tolist() == [0]
    assert out[1].nonzero()[0].tolist() == [SIDE_AWARE_CLASSES.index("left pleural effusion")]
    assert out[2].nonzero()[0].tolist() == [16]


def test_subgroup_mask():
    f = pd.DataFrame({"view": ["AP", "PA", "pa", "LATERAL", "AP"], "sex": ["M", "F", "female", "M", None],
                      "age": [20, 39.9, 40, 100, np.nan]})
    assert subgroup_mask(f).all()
    assert subgroup_mask(f, view="PA").tolist() == [False, True, True, False, False]
    assert subgroup_mask(f, sex="F").tolist() == [False, True, True, False, False]
    assert subgroup_mask(f, age_bin="20-40").tolist() == [True, True, False, False, False]
    assert subgroup_mask(f, age_bin="80-100").tolist() == [False, False, False, True, False]
    assert subgroup_mask(f, view=["AP", "PA"], sex="M", age_bin="20-40").tolist() == [True] + [False] * 4
    with pytest.raises(KeyError, match="age"):
        subgroup_mask(f.drop(columns="age"), age_bin="20-40")
    with pytest.raises(ValueError, match="age bin"):
        subgroup_mask(f, age_bin="10-20")


def test_empty_class_conventions_by_hand():
    # 5 images, 3 classes, k = 2. class_2 has no positive image (as in a small subgroup); class_1's queries
    # (1, 3) have no hit, so skip mode empties it too. class_0: query 0 hits at rank 1 (AP 1, HR 1/2, RR 1),
    # query 2 has no hit (0, 0, 0) -> plain (1/2, 1/4, 1/2), skip (1, 1/2, 1). Weights = counts / 4 = [1/2, 1/2, 0].
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    nb = np.array([[2, 4], [4, 0], [4, 1], [0, 4], [0, 1]])
    ca, wa, cols = CLASS_AVERAGE, CLASS_WEIGHTED_AVERAGE, ["mAP", "mHR", "mRR"]

    def row(df, name):
        return df.loc[name, cols].to_numpy(dtype=float)

    # plain, exclude (default): class_2 NaN and left out; averages over classes 0 and 1
    ex = retrieval_metrics(labels, nb, k=2)
    assert np.isnan(row(ex, "class_2")).all() and ex.attrs["excluded"] == ["class_2"] and ex.attrs["zeroed"] == []
    np.testing.assert_allclose(row(ex, "class_0"), [1 / 2, 1 / 4, 1 / 2])
    np.testing.assert_allclose(row(ex, "class_1"), [0, 0, 0])
    np.testing.assert_allclose(row(ex, ca), [1 / 4, 1 / 8, 1 / 4])
    np.testing.assert_allclose(row(ex, wa), [1 / 4, 1 / 8, 1 / 4])
    # plain, zero (original): class_2 counts as 0 and the Class Average divides by 3; its weight is 0
    zr = retrieval_metrics(labels, nb, k=2, empty_class="zero")
    np.testing.assert_allclose(row(zr, "class_2"), [0, 0, 0])
    assert zr.attrs["zeroed"] == ["class_2"] and zr.attrs["excluded"] == [] and zr.attrs["empty_class"] == "zero"
    np.testing.assert_allclose(row(zr, ca), [1 / 6, 1 / 12, 1 / 6])
    np.testing.assert_allclose(row(zr, wa), [1 / 4, 1 / 8, 1 / 4])
    # skip, exclude: only class_0 (query 0) is left -> both averages = class_0
    sx = retrieval_metrics(labels, nb, k=2, skip_no_hit=True)
    assert sx.attrs["excluded"] == ["class_1", "class_2"]
    np.testing.assert_allclose(row(sx, ca), [1, 1 / 2, 1])
    np.testing.assert_allclose(row(sx, wa), [1, 1 / 2, 1])
    # skip, zero: classes 1 and 2 count as 0; weighted = 1/2 * class_0 (class_1 keeps its full weight 1/2)
    sz = retrieval_metrics(labels, nb, k=2, skip_no_hit=True, empty_class="zero")
    assert sz.attrs["zeroed"] == ["class_1", "class_2"]
    np.testing.assert_allclose(row(sz, ca), [1 / 3, 1 / 6, 1 / 3])
    np.testing.assert_allclose(row(sz, wa), [1 / 2, 1 / 4, 1 / 2])
    # every class has query rows: the conventions agree
    full = labels[:4, :2], nb[:4] % 4
    pd.testing.assert_frame_equal(retrieval_metrics(*full, k=2), retrieval_metrics(*full, k=2, empty_class="zero"))
    with pytest.raises(ValueError, match="empty_class"):
        retrieval_metrics(labels, nb, k=2, empty_class="nan")
