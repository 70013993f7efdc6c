"""What every ``<method>.predict`` test checks, written once (imported by the five methods' test_predict.py).

``user_images(tmp)`` makes the inputs: the four real X-rays the project ships (shared/tests/fixtures/real_images),
a non-square crop of one, and three encodings of the same picture (8-bit PNG, 16-bit PNG, MONOCHROME1 DICOM with
12-bit data) that decode to identical arrays. ``check_records`` asserts the JSON contract and the pictures.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from shared.data.images import load_image

REAL_IMAGES = Path(__file__).resolve().parent / "fixtures" / "real_images"
REAL = ("00000001_000.png", "00000001_001.png", "00000001_002.png", "adnet_sample.png")
SAME_PICTURE = ("same_8bit.png", "same_16bit.png", "same_mono1.dcm")


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None, lut=None,
                view_position=None):
    """A 12-bit (16 allocated) grayscale DICOM of ``pixels`` with the given LUT tags (pydicom 2 and 3)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if view_position is not None:
        ds.ViewPosition = view_position
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if lut is not None:   # (first input value mapped, bits per entry, entries)
        first, bits, entries = lut
        item = pydicom.Dataset()
        item.LUTDescriptor = [len(entries), first, bits]
        item.add_new(0x00283006, "US", [int(v) for v in entries])   # LUTData
        ds.VOILUTSequence = [item]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    try:
        ds.save_as(path, enforce_file_format=True)      # pydicom >= 3
    except TypeError:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def user_images(tmp: Path) -> dict[str, Path]:
    """{name: path} of every input above, written under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = {name: Path(shutil.copy(REAL_IMAGES / name, tmp / name)) for name in REAL}
    gray = np.asarray(Image.open(REAL_IMAGES / REAL[1]).convert("L"))
    Image.fromarray(gray[100:800, :]).save(tmp / "wide.png")                       # 1024 x 700: not square
    out["wide.png"] = tmp / "wide.png"
    lo, hi = int(gray.min()), int(gray.max())                                       # stretched to 0..255 so that
    ref = np.rint((gray.astype(np.float64) - lo) * 255 / (hi - lo)).astype(np.uint8)   # every decoder is exact
    Image.fromarray(ref).save(tmp / SAME_PICTURE[0])
    Image.fromarray(ref.astype(np.uint16) * 257).save(tmp / SAME_PICTURE[1])        # 16-bit PNG (I;16)
    write_dicom(tmp / SAME_PICTURE[2], 4080 - ref.astype(np.uint16) * 16, photometric="MONOCHROME1")
    for name in SAME_PICTURE:
        out[name] = tmp / name
    return out


def check_records(records: list[dict], method: str, findings: list[str], images: dict[str, Path]) -> None:
    """The JSON contract of ``--json`` for ``images`` (in order), the pictures, and equal answers for one picture."""
    assert [Path(r["image"]).name for r in records] == list(images)
    for record in records:
        assert {"image", "method", "findings", "warnings", "picture", "panels"} <= set(record)
        assert record["method"] == method
        names = [f["finding"] for f in record["findings"]]
        probs = np.array([f["probability"] for f in record["findings"]])
        assert sorted(names) == sorted(findings)
        assert ((probs >= 0) & (probs <= 1)).all() and (np.diff(probs) <= 0).all()     # in [0, 1], sorted
        assert not [w for w in record["warnings"] if "inverted" in w or "normalised" in w], record["warnings"]
        picture = Path(record["picture"])
        assert picture.name == f"{Path(record['image']).stem}_{method}.png"
        with Image.open(picture) as img:
            width, height = img.size
        src_h, src_w = load_image(record["image"]).shape
        panel_w = width / record["panels"]
        assert panel_w == int(panel_w) and abs(panel_w / height - src_w / src_h) < 0.01   # the image's aspect
    by_name = {Path(r["image"]).name: {f["finding"]: f["probability"] for f in r["findings"]} for r in records}
    reference = by_name[SAME_PICTURE[0]]
    for other in SAME_PICTURE[1:]:
        assert by_name[other] == reference, f"{other} gives another answer than its 8-bit PNG"


def save_run(run: Path, cfg, model, checkpoint: Path | None = None) -> Path:
    """A training run as predict reads it: RUN/config.yaml and the model in our checkpoint format (default
    RUN/checkpoints/best.pt). Tiny random models stand in for trained ones: the tests check the plumbing."""
    from shared.config import save_config
    from shared.engine import save_checkpoint

    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    save_checkpoint({"format": 1, "model": model.state_dict(), "ema": None},
                    checkpoint or run / "checkpoints" / "best.pt")
    return run


def predict_json(main, argv: list[str], capsys) -> list[dict]:
    """Run a predict ``main`` with ``--json``; its exit status must be 0; the parsed records."""
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)
