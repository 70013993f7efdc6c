"""shared.data.nih against the REAL shipped NIH metadata, and its errors on a tiny written layout."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from shared.data import DataError, nih
from shared.data.labels import NIH_LABELS, NIH_NO_FINDING


def test_real_data_entry_index(nih_real_index, files_dir):
    frame = nih_real_index
    assert len(frame) == 112_120
    assert frame.attrs["label_columns"] == NIH_LABELS
    assert {"path", "image_id", "patient_id", "split", "age", "sex", "view"} <= set(frame.columns)
    assert frame["patient_id"].nunique() == 30_805
    assert frame["split"].value_counts().to_dict() == {"train": 86_524, "test": 25_596}
    assert all(frame[c].dtype == np.float32 for c in NIH_LABELS)
    # per-label counts computed independently from the raw CSV
    raw = pd.read_csv(files_dir / "nih" / "Data_Entry_2017_v2020.csv.gz")
    for label in NIH_LABELS:
        expected = raw["Finding Labels"].str.contains(rf"(?:^|\|){label}(?:\||$)", regex=True).sum()
        assert frame[label].sum() == expected, label
    assert frame["Hernia"].sum() == 227 and frame["Infiltration"].sum() == 19_894
    no_finding = (frame[NIH_LABELS].sum(axis=1) == 0).sum()
    assert no_finding == (raw["Finding Labels"] == "No Finding").sum() == 60_361
    assert frame["path"].iloc[0].endswith("images/00000001_000.png")


def test_no_finding_class(nih_root_factory):
    root = nih_root_factory([("a_000.png", "No Finding", "1"), ("b_000.png", "Mass|Nodule", "2")])
    frame = nih.read_index(root, no_finding="class")
    assert frame.attrs["label_columns"] == NIH_LABELS + [NIH_NO_FINDING]
    assert frame[NIH_NO_FINDING].tolist() == [1.0, 0.0]
    assert frame.loc[1, ["Mass", "Nodule"]].tolist() == [1.0, 1.0] and frame.loc[0, NIH_LABELS].sum() == 0


def test_real_boxes():
    boxes = nih.read_boxes()
    assert list(boxes.columns) == ["image_id", "label", "x", "y", "w", "h"]
    assert len(boxes) == 984 and boxes["image_id"].nunique() == 880
    counts = boxes["label"].value_counts().to_dict()
    assert counts == {"Atelectasis": 180, "Effusion": 153, "Cardiomegaly": 146, "Infiltration": 123,
                      "Pneumonia": 120, "Pneumothorax": 98, "Mass": 85, "Nodule": 79}
    assert (boxes[["w", "h"]] > 0).all().all() and boxes["x"].between(0, 1024).all()


def test_images_found_in_both_layouts_and_split(nih_root_factory):
    entries = [(f"0000000{k}_000.png", "Effusion" if k % 2 else "No Finding", str(k)) for k in range(4)]
    names = [e[0] for e in entries]
    root = nih_root_factory(entries, layout="kaggle",
                            lists={"train_val_list": names[:3], "test_list": names[3:]})
    frame = nih.read_index(root)
    assert frame["split"].tolist() == ["train", "train", "train", "test"]
    assert all("images_00" in p for p in frame["path"])
    assert frame["patient_id"].tolist() == ["0", "1", "2", "3"]
    assert frame["Effusion"].tolist() == [0.0, 1.0, 0.0, 1.0]
    # gzip'ed label table under the other name is read too
    with open(root / "Data_Entry_2017.csv", "rb") as src, gzip.open(root / "Data_Entry_2017_v2020.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (root / "Data_Entry_2017.csv").unlink()
    assert nih.read_index(root)["image_id"].tolist() == names


def test_unlisted_images_are_warned(nih_root_factory):
    root = nih_root_factory([("a_000.png", "Mass", "1"), ("b_000.png", "Mass", "2")],
                            lists={"train_val_list": ["a_000.png"], "test_list": []})
    with pytest.warns(UserWarning, match="1 images .* neither"):
        frame = nih.read_index(root)
    assert frame["split"].tolist() == ["train", "unlisted"]


def test_missing_image_error_and_warn(nih_root_factory):
    root = nih_root_factory([("a_000.png", "Mass", "1"), ("b_000.png", "Edema", "2"), ("c_000.png", "Mass", "3")],
                            lists={"train_val_list": ["a_000.png", "b_000.png", "c_000.png"], "test_list": []})
    (root / "images" / "b_000.png").unlink()
    with pytest.raises(FileNotFoundError, match="b_000.png"):
        nih.read_index(root)
    with pytest.warns(UserWarning, match="1 of 3 image files missing.*skipped 1"):
        frame = nih.read_index(root, on_missing="warn")
    assert frame["image_id"].tolist() == ["a_000.png", "c_000.png"]
    assert frame.attrs["skipped_missing"] == 1
    assert len(nih.read_index(root, check_files=False)) == 3
    for name in ("train_val_list.txt", "test_list.txt"):
        (root / name).unlink()
    (root / "images" / "b_000.png").touch()
    with pytest.warns(UserWarning, match="split is 'unlisted'"):
        assert (nih.read_index(root)["split"] == "unlisted").all()


def test_missing_column_and_unknown_label(nih_root_factory, tmp_path):
    root = nih_root_factory([("a_000.png", "Mass", "1"), ("b_000.png", "Edema|Pneumothorx", "2")],
                            write_images=False)
    with pytest.raises(DataError, match=r"line 3.*'Pneumothorx'"):
        nih.read_index(root, check_files=False)
    table = pd.read_csv(root / "Data_Entry_2017.csv").drop(columns=["Patient ID"])
    table.to_csv(root / "Data_Entry_2017.csv", index=False)
    with pytest.raises(DataError, match=r"Data_Entry_2017.csv: missing column\(s\) \['Patient ID'\]"):
        nih.read_index(root, check_files=False)
    with pytest.raises(DataError, match="none of"):
        nih.read_index(tmp_path / "empty_dir")


def test_box_list_errors(tmp_path):
    (tmp_path / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Infiltrate,1,2,3,4\nb.png,Tumour,1,2,3,4\n")
    with pytest.raises(DataError, match=r"line 3.*'Tumour'"):
        nih.read_boxes(tmp_path)
    (tmp_path / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Infiltrate,1,2,3,4\n")
    boxes = nih.read_boxes(tmp_path)
    assert boxes.iloc[0].tolist() == ["a.png", "Infiltration", 1.0, 2.0, 3.0, 4.0]
