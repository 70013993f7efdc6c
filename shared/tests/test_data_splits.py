"""shared.data.splits against the REAL shipped split files, plus the seeded patient-disjoint splitters."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.data import DataError, nih, splits
from shared.data.labels import NIH_WANG_ORDER


def _patients(names, patient_of):
    return {patient_of[n] for n in names}


def test_nih_official_counts_and_patient_disjoint(nih_real_index):
    official = splits.nih_official()
    assert len(official["train"]) == 86_524 and len(official["test"]) == 25_596
    assert not set(official["train"]) & set(official["test"])
    patient_of = dict(zip(nih_real_index["image_id"], nih_real_index["patient_id"]))
    assert set(official["train"]) | set(official["test"]) == set(patient_of)
    assert not _patients(official["train"], patient_of) & _patients(official["test"], patient_of)


def test_ham_imagesets_folds(nih_real_index):
    sets = splits.ham_imagesets()
    all_images = set(nih_real_index["image_id"])
    box_images = set(nih.read_boxes()["image_id"])
    assert len(sets["Main/train_val_list"]) == 86_524 and len(sets["Main/test_list"]) == 25_596
    assert len(sets["Main/train_wo_bbox"]) == 111_240 and set(sets["Main/test_bboxs"]) == box_images
    assert set(sets["Main/train_wo_bbox"]) | box_images == all_images
    bbox_tests = [set(sets[f"bbox/fold{k}/test"]) for k in range(1, 6)]
    assert sum(map(len, bbox_tests)) == 880 and set.union(*bbox_tests) == box_images
    main_tests = [set(sets[f"Main/fold{k}/test_0.2_0.2"]) for k in range(1, 6)]
    assert sum(map(len, main_tests)) == 112_120 and set.union(*main_tests) == all_images
    fold1 = splits.ham_imagesets(fold=1)
    sizes = {k: len(fold1[k]) for k in ("Main/train_0.7_0.7", "Main/val_0.1_0.1", "Main/test_0.2_0.2",
                                        "Main/train_0.5_0.8", "bbox/test")}
    assert sizes == {"Main/train_0.7_0.7": 73_127, "Main/val_0.1_0.1": 12_331, "Main/test_0.2_0.2": 26_662,
                     "Main/train_0.5_0.8": 56_728, "bbox/test": 186}
    assert "Main/fold2/test_0.2_0.2" not in fold1 and "Main/test_list" in fold1
    with pytest.raises(DataError, match="no fold 9"):
        splits.ham_imagesets(fold=9)


def test_ham_boxes():
    nih_boxes = splits.ham_boxes("nih")
    reference = nih.read_boxes()
    key = ["image_id", "label"]
    merged = nih_boxes.sort_values(key + ["x"]).reset_index(drop=True)
    ref = reference.sort_values(key + ["x"]).reset_index(drop=True)
    assert len(merged) == 984 and (merged[key] == ref[key]).all().all()
    np.testing.assert_allclose(merged[["x", "y", "w", "h"]], ref[["x", "y", "w", "h"]], rtol=1e-5, atol=1e-3)

    chex = splits.ham_boxes("chexpert")
    assert list(chex.columns) == ["image_id", "label", "x", "y", "w", "h"]
    assert len(chex) == 6_101 and chex["image_id"].nunique() == 2_347
    assert len(chex.attrs["images_without_boxes"]) == 1
    assert set(chex["label"]) == set(splits.HAM_CHEXPERT_CLASSES)
    assert (chex[["w", "h"]] >= 0).all().all()
    assert chex["image_id"].str.match(r"^(train|valid)/patient\d+/study\d+/view\d+_\w+\.jpg$").all()


def test_chexnet_lists(nih_real_index):
    lists = splits.chexnet_lists()
    assert lists["split"].value_counts().to_dict() == {"train": 78_468, "test": 22_433, "val": 11_219}
    assert list(lists.columns[2:]) == NIH_WANG_ORDER and lists[NIH_WANG_ORDER].dtypes.eq(np.float32).all()
    patient_of = dict(zip(nih_real_index["image_id"], nih_real_index["patient_id"]))
    groups = {s: _patients(g["image_id"], patient_of) for s, g in lists.groupby("split")}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(map(len, groups.values())) == 30_805


def _toy_frame(n_patients=50, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, n_patients)
    pid = np.repeat([f"p{i}" for i in range(n_patients)], counts)
    split = np.where(np.repeat(np.arange(n_patients) < 40, counts), "train", "test")
    return pd.DataFrame({"image_id": [f"im{i}" for i in range(len(pid))], "patient_id": pid, "split": split})


def test_patient_holdout():
    frame = _toy_frame()
    out = splits.patient_holdout(frame, 0.25, seed=3)
    assert (out.loc[frame["split"] == "test", "split"] == "test").all()
    val_p = set(out.loc[out["split"] == "val", "patient_id"])
    train_p = set(out.loc[out["split"] == "train", "patient_id"])
    assert len(val_p) == 10 and not val_p & train_p
    again = splits.patient_holdout(frame.sample(frac=1.0, random_state=1), 0.25, seed=3)
    assert set(again.loc[again["split"] == "val", "patient_id"]) == val_p
    assert set(splits.patient_holdout(frame, 0.25, seed=4).query("split == 'val'")["patient_id"]) != val_p
    assert (frame["split"] != "val").all()          # input untouched
    with pytest.raises(ValueError):
        splits.patient_holdout(frame, 1.5, seed=0)


def test_patient_kfold():
    frame = _toy_frame()
    folds = splits.patient_kfold(frame, 5, seed=0)
    assert folds.index.equals(frame.index) and set(folds) == set(range(5))
    assert (frame.groupby("patient_id").apply(lambda g: folds[g.index].nunique()) == 1).all()
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 5
    assert folds.equals(splits.patient_kfold(frame, 5, seed=0))


def test_mimic_official_and_chexclusion(tmp_path):
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd1,50000001,10000032,train\nd2,50000002,10000033,validate\n"
        "d3,50000003,10000034,test\n")
    official = splits.mimic_official(tmp_path)
    assert official["split"].tolist() == ["train", "val", "test"]
    assert official["subject_id"].tolist() == ["10000032", "10000033", "10000034"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id,split\nd1,5,1,holdout\n")
    with pytest.raises(DataError, match="line 2.*'holdout'"):
        splits.mimic_official(tmp_path / "bad")
    (tmp_path / "subj.csv").write_text(",subject_id\n0,10000034\n1,10000032\n2,10000034\n")
    assert splits.chexclusion_test_subjects(tmp_path / "subj.csv") == ["10000032", "10000034"]
    (tmp_path / "plain.csv").write_text("10000034\n10000033\n")
    assert splits.chexclusion_test_subjects(tmp_path / "plain.csv") == ["10000033", "10000034"]


def test_assign_split_matches_reader(nih_real_index):
    relabelled = splits.assign_split(nih_real_index.drop(columns="split"), splits.nih_official())
    assert relabelled["split"].equals(nih_real_index["split"].astype(relabelled["split"].dtype))
    with pytest.raises(DataError, match="both split"):
        splits.assign_split(nih_real_index, {"train": ["00000001_000.png"], "test": ["00000001_000.png"]})
