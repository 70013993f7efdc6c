"""The synthetic twin read through the REAL readers gives the labels the generator drew (CheXpert, MIMIC-CXR,
ImaGenome, OpenI); the NIH check is in test_synthetic.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.data import synthetic as syn
from shared.data.labels import CHEXPERT_LABELS, IMAGENOME_FINDINGS


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    base = tmp_path_factory.mktemp("twin_readers")
    return {lay: syn.generate(lay, base / lay, n=36, size=48, seed=5)
            for lay in ("chexpert", "mimic", "imagenome", "openi")}


def _truth_by_path(root: Path) -> dict:
    truth = json.loads((root / "truth.json").read_text())
    return {str((root / rel).resolve()): rec for rel, rec in truth.items()}


def _expected_chexpert(findings) -> dict:
    """CheXpert label -> 1/0 with uncertain counted positive and blanks negative."""
    out = {lab: float(any(f in findings for f in srcs)) for lab, srcs in syn.CHEXPERT_FROM_FINDINGS.items()}
    out["No Finding"] = float(not any(v for lab, v in out.items() if lab != "Support Devices"))
    return out


def test_chexpert_labels_through_the_reader(twins):
    from shared.data import chexpert
    root = twins["chexpert"]
    frame = chexpert.read_index(root, "all", uncertain="ones", blank="zeros")
    truth = _truth_by_path(root)
    assert len(frame) == 36 and frame["split"].nunique() == 2   # train.csv and valid.csv rows
    for _, row in frame.iterrows():
        want = _expected_chexpert(truth[row["path"]]["findings"])
        assert {lab: float(row[lab]) for lab in CHEXPERT_LABELS} == want, row["path"]


def test_mimic_labels_and_reports_through_the_reader(twins):
    from shared.data import mimic
    root = twins["mimic"]
    frame = mimic.read_index(root, labeler="chexpert", uncertain="ones", blank="zeros")
    truth = _truth_by_path(root)
    assert len(frame) == 36 and set(frame["split"]) <= {"train", "val", "validate", "test"}
    for _, row in frame.iterrows():
        rec = truth[row["path"]]
        want = _expected_chexpert(rec["findings"])
        assert {lab: float(row[lab]) for lab in want} == want, row["path"]
        rep = mimic.read_report(mimic.report_path(root, str(row["subject_id"]), str(row["study_id"])))
        assert rep["impression"] == rec["report"]["impression"]
        assert rep["findings"] == rec["report"]["findings"]


def test_imagenome_labels_through_the_reader(twins):
    from shared.data import imagenome
    root = twins["imagenome"]
    frame = imagenome.read_index(root, with_labels=True)
    truth = _truth_by_path(root)
    messy = json.loads((root / "scene_graph_messy.json").read_text())
    assert len(frame) == sum(r["view"] == "frontal" for r in truth.values())
    for _, row in frame.iterrows():
        rec = truth[row["path"]]
        want = {g: float(any(g in v for v in rec["imagenome"].values())) for g in IMAGENOME_FINDINGS}
        assert {g: float(row[g]) for g in IMAGENOME_FINDINGS} == want, row["image_id"]
        dropped = messy["dropped_object"] and row["image_id"] == messy["dropped_object"][0]
        assert row["n_anatomies"] == (17 if dropped else 18)
    assert frame[IMAGENOME_FINDINGS].to_numpy().sum() > 0
    g = imagenome.read_scene_graph(frame["scene_graph"].iloc[0])
    rec = truth[frame["path"].iloc[0]]
    for name, (x, y, w, h) in rec["anatomy"].items():
        if name in g.boxes:
            x1, y1, x2, y2 = g.boxes[name]
            assert abs(x1 - x) <= 1 and abs(x2 - (x + w)) <= 1 and abs(y2 - (y + h)) <= 1


def test_openi_reports_through_the_reader(twins):
    from shared.data import openi
    root = twins["openi"]
    frame = openi.read_reports(root)
    truth = _truth_by_path(root)
    assert len(frame) == 36
    for _, row in frame.iterrows():
        rep = truth[row["path"]]["report"]
        assert (row["findings"] or "") == rep["findings"] and row["impression"] == rep["impression"]
