"""The original's ResNet50 per-query output (shipped fixture) goes through test.py's own table code and prints
exactly the table the original printed (9 classes, k = 10, skip = False)."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data.labels import IMAGENOME_FINDINGS

from chextriev.test import format_table, retrieval_tables

FIX = Path(__file__).resolve().parents[2] / "shared" / "tests" / "fixtures" / "chextriev"
N_TEST = 3191


def rebuild(csv_path):
    """3191 x 9 label matrix and each query's ranked neighbours from the per-query CSV.

    Labels: the classes an image is a query for plus those where it is retrieved as a hit. The CSV's
    query_indices is the original's FIRST search result (assumed to be the query): for test image 1517, whose
    duplicate 2878 ranks first, it says 2878. Rows of a class are in ascending query order, so the true query of
    a row is the c-th positive image of its class."""
    frame = pd.read_csv(csv_path)
    cls = frame["label_name"].map(IMAGENOME_FINDINGS.index).to_numpy()
    q = frame["query_indices"].to_numpy()
    targets = np.array([ast.literal_eval(t) for t in frame["target_indices"]], dtype=np.int64)
    hits = np.array([ast.literal_eval(h) for h in frame["target_hit"]], dtype=bool)
    labels = np.zeros((N_TEST, len(IMAGENOME_FINDINGS)), dtype=np.int64)
    labels[q, cls] = 1
    labels[targets[hits], np.broadcast_to(cls[:, None], targets.shape)[hits]] = 1
    true_q = np.empty_like(q)
    for c in range(len(IMAGENOME_FINDINGS)):
        true_q[cls == c] = np.flatnonzero(labels[:, c])
    neighbors = np.full((N_TEST, targets.shape[1]), -1, dtype=np.int64)
    neighbors[true_q] = targets
    return frame, labels, neighbors


def test_original_resnet50_table_reproduced_through_test_py():
    frame, labels, neighbors = rebuild(FIX / "resnet50_orig_9cls_top10_rankings.csv.gz")
    assert len(frame) == 8533
    assert labels.sum(0).tolist() == [2679, 1340, 1241, 1212, 819, 96, 334, 169, 643]
    assert int((labels.sum(1) == 0).sum()) == 372
    table = retrieval_tables(labels, neighbors, [10], IMAGENOME_FINDINGS)[(10, False)]
    expected = (FIX / "resnet50_orig_9cls_top10_table.txt").read_text().strip()
    assert format_table(table) == expected
    weights = np.load(FIX / "test_weights.npy")
    assert np.allclose(table.attrs["weights"], weights, atol=1e-6)
