"""cxrclip.prepare on small synthetic downloads: DICOM conversion as the original, splits, resumable, skips named."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cxrclip.prepare import convert_image, main, prepare


def write_dicom(path, pixels, photometric="MONOCHROME2"):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, -100.0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def ramp(h=40, w=60):
    return np.tile(np.linspace(100, 4000, w), (h, 1))


def test_dicom_conversion_inverts_monochrome1_resizes_and_stretches(tmp_path):
    write_dicom(tmp_path / "m2.dcm", ramp())
    write_dicom(tmp_path / "m1.dcm", ramp(), photometric="MONOCHROME1")
    m2, m1 = convert_image(tmp_path / "m2.dcm", 20), convert_image(tmp_path / "m1.dcm", 20)
    assert m2.shape == m1.shape == (20, 30) and m2.dtype == np.uint8          # short side 20, aspect kept
    assert m2.min() == 0 and m2.max() == 255                                  # min-max to uint8
    assert m2[0, 0] < m2[0, -1] and m1[0, 0] > m1[0, -1]                      # MONOCHROME1: low value = bright
    np.testing.assert_allclose(m1.astype(int), 255 - m2.astype(int), atol=1)
    write_dicom(tmp_path / "wide.dcm", ramp(30, 52))
    assert convert_image(tmp_path / "wide.dcm", 20).shape == (20, 34)     # 34.67 truncated, as the original
    assert not np.array_equal(convert_image(tmp_path / "wide.dcm", 20),
                              convert_image(tmp_path / "wide.dcm", 20, "lanczos"))


def _rsna(root, n=20):
    rows = []
    for i in range(n):
        write_dicom(root / "stage_2_train_images" / f"p{i}.dcm", ramp(24, 24) + i,
                    photometric="MONOCHROME1" if i == 0 else "MONOCHROME2")
        rows += [(f"p{i}", i % 3 == 0)] * (2 if i % 3 == 0 else 1)          # one row per box, as Kaggle's
    pd.DataFrame(rows, columns=["patientId", "Target"]).assign(x=0, y=0, width=1, height=1).to_csv(
        root / "stage_2_train_labels.csv", index=False)
    return root


def test_rsna_splits_resumes_and_names_what_it_skipped(tmp_path, capsys):
    raw = _rsna(tmp_path / "raw")
    (raw / "stage_2_train_images" / "p5.dcm").write_bytes(b"not a dicom")
    counts = prepare("rsna", raw, tmp_path / "out", size=16)
    assert counts == {"train": 13, "valid": 3, "test": 3}       # 20 -> 14 / 3 / 3, then p5 (train) skipped
    out = capsys.readouterr().out
    assert "skipped 1 of 20 images" in out and "p5.dcm" in out
    splits = {s: pd.read_csv(tmp_path / "out" / f"{s}.csv") for s in counts}
    images = [i for frame in splits.values() for i in frame["image"]]
    assert len(images) == len(set(images)) == 19 and "images/p5.png" not in images
    assert list(splits["train"].columns) == ["image", "Pneumonia"]
    labels = pd.concat(splits.values()).set_index("image")["Pneumonia"]
    assert labels["images/p3.png"] == 1 and labels["images/p4.png"] == 0
    assert pd.read_csv(tmp_path / "out" / "skipped.csv")["src"].str.endswith("p5.dcm").all()
    first = tmp_path / "out" / "images" / "p0.png"
    stamp = os.stat(first).st_mtime_ns
    assert prepare("rsna", raw, tmp_path / "out", size=16) == counts           # resumed: nothing rewritten
    assert os.stat(first).st_mtime_ns == stamp


def test_openi_and_chexpert5x200_csvs_are_what_test_py_reads(tmp_path):
    from shared.data import synthetic
    from cxrclip.data import read_chexpert5x200

    openi_raw = synthetic.generate("openi", tmp_path / "openi", n=12, size=32, seed=0)
    main(["openi", "--root", str(openi_raw), "--out", str(tmp_path / "openi_out"), "--size", "16",
          "--workers", "1"])
    pairs = pd.read_csv(tmp_path / "openi_out" / "openi_test.csv")
    assert list(pairs.columns) == ["image", "text"] and pairs["image"].str.endswith("-1001.png").all()
    assert all((tmp_path / "openi_out" / p).is_file() for p in pairs["image"])

    chexpert_raw = synthetic.generate("chexpert", tmp_path / "cx" / "CheXpert-v1.0", n=12, size=32, seed=0)
    frontal = sorted(chexpert_raw.rglob("view1_frontal.jpg"))[:4]
    rel = ["CheXpert-v1.0/" + str(p.relative_to(chexpert_raw)) for p in frontal]
    classes = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    pd.DataFrame({"Path": rel, **{c: np.eye(4, 5, dtype=int)[:, j] for j, c in enumerate(classes)},
                  "Report Impression": ["a", "b", "c", "d"]}).to_csv(tmp_path / "cx" / "chexpert_5x200.csv",
                                                                     index=False)
    assert prepare("chexpert5x200", tmp_path / "cx", tmp_path / "five", size=16) == {"chexpert_5x200": 4}
    five = read_chexpert5x200(tmp_path / "five" / "chexpert_5x200.csv")
    assert list(five.columns[:6]) == ["Path", *classes] and five["Path"].str.endswith(".png").all()
    assert all((tmp_path / "five" / p).is_file() for p in five["Path"])


def test_missing_download_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage_2_train_labels.csv not found"):
        prepare("rsna", tmp_path, tmp_path / "out")
