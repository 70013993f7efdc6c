"""Write the CSVs (and 512-px PNGs) CXR-CLIP's downstream evaluations read, from the datasets as downloaded.

    python -m cxrclip.prepare rsna --root RAW --out DIR      # RAW as downloaded (layouts below); see README
    python -m cxrclip.prepare {rsna,siim,vindr,openi,chexpert5x200} --root RAW --out DIR [--workers N]

Images are converted as the original did: DICOM -> modality LUT -> VOI LUT -> MONOCHROME1 inverted -> resized so
the short side is 512 (sizes truncated) -> min-max to uint8 (truncated); PNG / JPEG inputs are decoded and resized
the same way (no stretch). The original meant Lanczos but passed ``cv2.INTER_LANCZOS4`` where ``cv2.resize`` takes
its output array, so it resized bilinearly: ``--interpolation linear`` (default, faithful) or ``lanczos``. They go to ``DIR/images/`` and the CSVs to ``DIR/`` with image paths relative to ``DIR``:

| dataset | RAW holds | writes | split |
|---|---|---|---|
| rsna | stage_2_train_labels.csv, stage_2_train_images/*.dcm | {train,valid,test}.csv: image, Pneumonia | 70% train; the rest halved (random_state 0): test, valid |
| siim | stage_2_train.csv or train-rle.csv, **/*.dcm | {train,valid,test}.csv: image, Pneumothorax | as rsna |
| vindr | annotations/image_labels_{train,test}.csv, {train,test}/*.dicom | {train,valid,test}.csv: image, one column per label but "Other lesion"/"Other disease" | test official; train/valid 80/20 (random_state 0) of the per-image max over readers |
| openi | NLMCXR reports + PNGs (shared.data.openi layout) | openi_test.csv: image, text | one frontal image per report |
| chexpert5x200 | chexpert_5x200.csv (GLoRIA) + the CheXpert images it names | chexpert_5x200.csv: Path, 5 classes, Report Impression | as given |

Resumable (an existing PNG is not converted again; every write is a temporary file renamed); a progress bar; an
image that cannot be read is skipped and listed with the reason in ``DIR/skipped.csv`` and the summary line.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd cxrclip && python prepare.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import argparse
import os
from typing import Callable

import cv2
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from cxrclip.data import openi_frontal, read_chexpert5x200
from shared.cli import cli_exit
from shared.data import mimic, openi
from shared.data.cache import ordered_parallel_map
from shared.data.images import load_image

SHORT_SIDE = 512
VINDR_DROPPED = ("Other lesion", "Other disease")   # 20 -> 18 labels, as the paper
VINDR_META = ("image_id", "rad_id")


# --------------------------------------------------------------------------------------------- conversion
def dicom_to_float(path: str | Path) -> np.ndarray:
    """DICOM pixels as the original prepared them: modality LUT, VOI LUT, MONOCHROME1 inverted (float)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


INTERPOLATION = {"linear": cv2.INTER_LINEAR, "lanczos": cv2.INTER_LANCZOS4}


def resize_short_side(arr: np.ndarray, size: int = SHORT_SIDE, interpolation: str = "linear") -> np.ndarray:
    """Short side -> ``size``, the other side scaled and truncated to an integer (as the original)."""
    h, w = arr.shape
    scale = size / min(h, w)
    return cv2.resize(arr, (max(1, int(w * scale)), max(1, int(h * scale))),
                      interpolation=INTERPOLATION[interpolation])


def minmax_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros(arr.shape, np.uint8) if hi <= lo else ((arr - lo) / (hi - lo) * 255).astype(np.uint8)


def convert_image(src: str | Path, size: int = SHORT_SIDE, interpolation: str = "linear") -> np.ndarray:
    """One source image -> the uint8 (H, W) image the evaluations read (short side ``size``)."""
    if str(src).lower().endswith((".dcm", ".dicom")):
        return minmax_uint8(resize_short_side(dicom_to_float(src), size, interpolation))
    arr = resize_short_side(load_image(src).astype(np.float32), size, interpolation)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _convert_one(job: tuple[str, str, int, str]) -> str | None:
    """Worker: (src, dst, size, interpolation) -> None when written (or already there), else why it was skipped."""
    src, dst, size, interpolation = job
    if os.path.isfile(dst):
        return None
    try:
        image = convert_image(src, size, interpolation)
    except Exception as err:  # noqa: BLE001 - any unreadable file is skipped and reported, never fatal
        return f"{type(err).__name__}: {err}"
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        return "PNG encoding failed"
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(buffer.tobytes())
    os.replace(tmp, dst)
    return None


def convert_all(frame: pd.DataFrame, out: Path, size: int, workers: int, interpolation: str) -> pd.DataFrame:
    """Convert ``frame.src`` to ``out / frame.image``; returns the rows whose image exists, writes skipped.csv."""
    jobs = [(src, str(out / rel), size, interpolation) for src, rel in zip(frame["src"], frame["image"])]
    reasons = list(tqdm(ordered_parallel_map(_convert_one, jobs, workers), total=len(jobs), desc="images"))
    skipped = pd.DataFrame({"src": frame["src"], "reason": reasons}).dropna()
    if len(skipped):
        skipped.to_csv(out / "skipped.csv", index=False)
        print(f"skipped {len(skipped)} of {len(frame)} images (reasons in {out / 'skipped.csv'}), e.g. "
              f"{skipped['src'].iloc[0]}: {skipped['reason'].iloc[0]}")
    return frame[[r is None for r in reasons]]


# -------------------------------------------------------------------------------------------------- splits
def gloria_split(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """RSNA / SIIM as GLoRIA: 70% train; the other 30% halved with random_state 0 (first half test, then valid)."""
    train, rest = train_test_split(frame, test_size=0.3, random_state=0)
    test, valid = train_test_split(rest, test_size=0.5, random_state=0)
    return {"train": train, "valid": valid, "test": test}


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {what}")
    return path


def _find_files(folder: Path, suffix: str) -> dict[str, str]:
    """{stem: path} of every ``suffix`` file under ``folder`` (recursively)."""
    return {p.stem: str(p) for p in _require(folder, "the image folder of the download").rglob(f"*{suffix}")}


# ------------------------------------------------------------------------------------------------- readers
def rsna_tables(root: Path) -> dict[str, pd.DataFrame]:
    labels = pd.read_csv(_require(root / "stage_2_train_labels.csv", "RSNA Pneumonia (Kaggle) label table"))
    per_image = labels.groupby("patientId", sort=False)["Target"].max().reset_index()
    frame = pd.DataFrame({"src": [str(root / "stage_2_train_images" / f"{i}.dcm") for i in per_image["patientId"]],
                          "image": [f"images/{i}.png" for i in per_image["patientId"]],
                          "Pneumonia": per_image["Target"].astype(int)})
    return gloria_split(frame)


def siim_tables(root: Path) -> dict[str, pd.DataFrame]:
    table = next((root / n for n in ("stage_2_train.csv", "train-rle.csv") if (root / n).is_file()), None)
    rle = pd.read_csv(_require(table or root / "stage_2_train.csv", "SIIM-ACR Pneumothorax labels "
                                                                      "(stage_2_train.csv or train-rle.csv)"))
    rle.columns = [c.strip() for c in rle.columns]      # one Kaggle file names its column " EncodedPixels"
    positive = rle.assign(pos=rle["EncodedPixels"].astype(str).str.strip() != "-1")
    per_image = positive.groupby("ImageId", sort=False)["pos"].max().reset_index()
    files = _find_files(root, ".dcm")     # the DICOMs sit in nested study/series folders
    frame = pd.DataFrame({"src": [files.get(i, str(root / f"{i}.dcm")) for i in per_image["ImageId"]],
                          "image": [f"images/{i}.png" for i in per_image["ImageId"]],
                          "Pneumothorax": per_image["pos"].astype(int)})
    return gloria_split(frame)


def vindr_tables(root: Path) -> dict[str, pd.DataFrame]:
    def read(split: str) -> pd.DataFrame:
        table = pd.read_csv(_require(root / "annotations" / f"image_labels_{split}.csv", "VinDr-CXR image labels"))
        classes = [c for c in table.columns if c not in VINDR_META and c not in VINDR_DROPPED]
        per_image = table.groupby("image_id", sort=False)[classes].max().reset_index()   # any reader
        return pd.DataFrame({"src": [str(root / split / f"{i}.dicom") for i in per_image["image_id"]],
                             "image": [f"images/{split}/{i}.png" for i in per_image["image_id"]],
                             **{c: per_image[c].astype(int) for c in classes}})
    train, valid = train_test_split(read("train"), test_size=0.2, random_state=0)
    return {"train": train, "valid": valid, "test": read("test")}


def openi_tables(root: Path) -> dict[str, pd.DataFrame]:
    pairs = openi_frontal(openi.read_reports(root, per="image"))
    texts = [mimic.longer_section(r) for r in pairs[["findings", "impression"]].to_dict("records")]
    frame = pd.DataFrame({"src": pairs["path"], "image": [f"images/{i}.png" for i in pairs["image_id"]],
                          "text": texts})
    empty = frame["text"] == ""
    if empty.any():
        print(f"openi: {int(empty.sum())} frontal images whose report has neither findings nor impression left out")
    return {"openi_test": frame[~empty]}


def chexpert5x200_tables(root: Path) -> dict[str, pd.DataFrame]:
    csv = _require(root / "chexpert_5x200.csv", "GLoRIA's chexpert_5x200.csv, put next to the CheXpert folder")
    frame = read_chexpert5x200(csv)
    rel = frame["Path"].astype(str).str.split("/", n=1).str[1]          # without the dataset folder's name
    folders = [d for d in root.iterdir() if d.is_dir() and (d / rel.iloc[0]).exists()] if len(frame) else []
    base = folders[0] if folders else root    # CheXpert-v1.0/ or a renamed copy of it
    frame = frame.drop(columns=["Path", "patient_id"])
    frame.insert(0, "src", [str(base / r) for r in rel])
    frame.insert(1, "image", "images/" + rel.str.rsplit(".", n=1).str[0] + ".png")
    return {"chexpert_5x200": frame}


TABLES: dict[str, Callable[[Path], dict[str, pd.DataFrame]]] = {
    "rsna": rsna_tables, "siim": siim_tables, "vindr": vindr_tables, "openi": openi_tables,
    "chexpert5x200": chexpert5x200_tables}


def prepare(dataset: str, root: str | Path, out: str | Path, size: int = SHORT_SIDE, workers: int = 1,
            interpolation: str = "linear") -> dict:
    """Convert the images of ``dataset`` and write its CSVs; returns {csv name: rows}."""
    root, out = Path(root), Path(out)
    tables = TABLES[dataset](_require(root, f"the {dataset} download"))
    out.mkdir(parents=True, exist_ok=True)
    every = pd.concat(tables.values())
    kept = set(convert_all(every, out, size, workers, interpolation)["image"])
    counts = {}
    for name, frame in tables.items():
        frame = frame[frame["image"].isin(kept)].drop(columns="src")
        if dataset == "chexpert5x200":
            frame = frame.rename(columns={"image": "Path"})   # GLoRIA's column name, which test.py reads
        frame.to_csv(out / f"{name}.csv", index=False)
        counts[name] = len(frame)
    print(f"{dataset}: " + ", ".join(f"{out / name}.csv {n} rows" for name, n in counts.items()))
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(TABLES))
    parser.add_argument("--root", required=True, help="the dataset as downloaded")
    parser.add_argument("--out", required=True, help="folder for images/ and the CSVs")
    parser.add_argument("--size", type=int, default=SHORT_SIDE, help="short side in pixels (the original's 512)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--interpolation", choices=sorted(INTERPOLATION), default="linear",
                        help="linear: what the original did (it meant lanczos, see above)")
    args = parser.parse_args(argv)
    return prepare(args.dataset, args.root, args.out, args.size, args.workers, args.interpolation)


if __name__ == "__main__":
    cli_exit("python -m cxrclip.prepare", main)
