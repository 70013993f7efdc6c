"""CXR-CLIP data: every training sample is (two images, two texts) whatever the source.

Sources (concatenated for training, as in the paper's M / M+C / M+C+C14 settings):
  mimic     image-text: a study's views and its report sections (FINDINGS / IMPRESSION).
  chexpert  label-only: texts composed from a prompt file (pos / neg / unc sentences); one sample per study;
            the patients of GLoRIA's chexpert_5x200.csv (the zero-shot test set) removed when it is given.
  chest14   label-only: positives (or "No Finding") + 3 sampled negatives ("Effusion" -> "Pleural Effusion");
            train_val_list only, 80/20 by patient as the original (``chest14_split``).
  custom    label-only, the CGMH fork's format: a CSV with ``image`` (list of paths) and ``text_label`` (list of
            positive labels), a user label list and prompt file from the config.
Two images = two distinct views of the study when it has several, else two augmentations of one image.
Two texts = two sections drawn with replacement (image-text), or two independent prompt draws (label-only).
Validation is deterministic: first two views, findings + impression (or the one section twice), first prompt
sentence of each positive.
"""
from __future__ import annotations

import ast
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from cxrclip import prompts as P
from cxrclip.tokenizer import tokenize
from shared.data import chexpert, mimic, nih, splits
from shared.data.images import check_frame_images, load_image, to_rgb
from shared.data.labels import CHEXPERT_LABELS, NIH_LABELS
from shared.data.transforms import IMAGENET_MEAN, IMAGENET_STD

HALF = (0.5, 0.5, 0.5)


@dataclass
class Sample:
    images: list[str]
    sections: list[str] = field(default_factory=list)           # image-text sources
    positives: list[str] = field(default_factory=list)          # label-only sources
    values: dict[str, float] = field(default_factory=dict)      # CheXpert 1/0/-1/NaN per label


def check_sample_images(samples: Sequence[Sample], verify: bool = False, on_bad_image: str = "error"
                        ) -> list[Sample]:
    """``samples`` after ``data.verify_images`` / ``data.on_bad_image`` (``shared.data.images.check_frame_images``
    over every image they list): with "warn" an undecodable view leaves its sample, and a sample left without any
    image is dropped; the warning counts the skipped files."""
    paths = pd.DataFrame({"path": sorted({path for sample in samples for path in sample.images})})
    kept = set(check_frame_images(paths, verify, on_bad_image)["path"])
    if len(kept) == len(paths):
        return list(samples)
    out = [replace(sample, images=[p for p in sample.images if p in kept]) for sample in samples]
    return [sample for sample in out if sample.images]


# ------------------------------------------------------------------------------------------------ transforms
class Clahe:
    """Contrast-limited adaptive histogram equalisation on the grey image, with probability ``p``."""

    def __init__(self, clip_limit: float = 4.0, p: float = 0.5, grid: int = 8):
        self.clip_limit, self.p, self.grid = clip_limit, p, grid

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        grey = np.asarray(image.convert("L"))
        equalised = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=(self.grid, self.grid)).apply(grey)
        return Image.fromarray(equalised).convert("RGB")


def normalisation(image_encoder: str) -> tuple[tuple, tuple]:
    """ImageNet statistics for ResNet, 0.5/0.5 for the HF Swin (its image processor's values)."""
    return (HALF, HALF) if image_encoder == "swin" else (IMAGENET_MEAN, IMAGENET_STD)


def train_transform(size: int, image_encoder: str) -> T.Compose:
    mean, std = normalisation(image_encoder)
    return T.Compose([T.RandomResizedCrop(size, scale=(0.8, 1.1)), Clahe(4.0, p=0.5),
                      T.ColorJitter(0.1, 0.2, 0.2, 0.1), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(size: int, image_encoder: str) -> T.Compose:
    mean, std = normalisation(image_encoder)
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


# -------------------------------------------------------------------------------------------------- datasets
class PairDataset(Dataset):
    """(image1, image2, text1, text2) from samples of one source; texts stay strings (the collator tokenises)."""

    def __init__(self, samples: Sequence[Sample], transform, train: bool, text_fn=None):
        self.samples = list(samples)
        self.transform = transform
        self.train = train
        self.text_fn = text_fn or self._sections

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, path: str) -> torch.Tensor:
        return self.transform(to_rgb(load_image(path)))

    def _sections(self, sample: Sample, draw: int) -> str:
        if self.train:
            return random.choice(sample.sections)
        return sample.sections[min(draw, len(sample.sections) - 1)]

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        paths = sample.images
        if len(paths) > 1:
            first, second = random.sample(paths, 2) if self.train else paths[:2]
        else:
            first = second = paths[0]
        return {"image1": self._image(first), "image2": self._image(second),
                "text1": self.text_fn(sample, 0), "text2": self.text_fn(sample, 1)}


def prompt_text_fn(prompts: dict, kind: str, train: bool, tasks: Sequence[str] = (), num_negs: int = 0):
    """Text maker for label-only samples (see cxrclip.prompts for the rules of each kind)."""
    def make(sample: Sample, draw: int) -> str:
        if not train:
            return P.validation_text(sample.positives, prompts)
        rng = random.Random(random.getrandbits(64))  # follows the engine's per-sample seeding
        if kind == "chexpert":
            return P.chexpert_text(sample.values, prompts, rng) or P.validation_text([], prompts)
        return P.positives_text(sample.positives, prompts, rng, tasks, num_negs) or P.validation_text([], prompts)
    return make


class TextCollator:
    """Batch of B pairs -> ``images`` (2B, 3, H, W) = [all image1; all image2] and ``input_ids`` /
    ``attention_mask`` (2B, L) = [all text1; all text2], padded to ``max_length`` when training, to the longest
    otherwise — one layout so the model runs one forward (which DDP needs) per batch."""

    def __init__(self, tokenizer, max_length: int = 256, train: bool = True):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.padding = "max_length" if train else "longest"

    def __call__(self, items: list[dict]) -> dict:
        images = torch.stack([it["image1"] for it in items] + [it["image2"] for it in items])
        texts = [it["text1"] for it in items] + [it["text2"] for it in items]
        return {"images": images, **tokenize(self.tokenizer, texts, self.max_length, self.padding)}


# ------------------------------------------------------------------------------------------ source readers
def mimic_samples(root: str | Path, split: str, on_missing: str = "error") -> list[Sample]:
    """One sample per MIMIC study of ``split`` (train / val / test) with a non-empty report section."""
    frame = mimic.read_index(root, with_reports=True, on_missing=on_missing)
    frame = frame[frame["split"] == split]
    samples, empty = [], 0
    for _, study in frame.groupby("study_id", sort=True):
        first = study.iloc[0]
        sections = [first[k] for k in ("findings", "impression") if first[k]]
        if not sections:
            empty += 1
            continue
        samples.append(Sample(images=study.sort_values("view", key=_frontal_first)["path"].tolist(),
                              sections=sections))
    if empty:
        print(f"mimic {split}: {empty} studies without FINDINGS/IMPRESSION text left out")
    return samples


def _frontal_first(view: pd.Series) -> pd.Series:
    return (~view.astype(str).str.upper().isin(["PA", "AP"])).astype(int)


def chexpert_samples(root: str | Path, split: str, holdout_csv: str | Path | None = None,
                     on_missing: str = "error") -> list[Sample]:
    """One sample per CheXpert study (``patientNNNNN/studyN``) with all its views, frontal first, so the two
    training images are two distinct views when the study has several. CheXpert labels a study, so its views carry
    the same labels; views whose labels differ are kept as separate samples rather than merged or dropped.
    ``holdout_csv``: GLoRIA's chexpert_5x200.csv; its patients are left out (as the original), said on stdout."""
    frame = chexpert.read_index(root, split=split, uncertain="keep", blank="keep", on_missing=on_missing)
    if holdout_csv:
        held = chexpert5x200_patients(holdout_csv)
        out = frame["patient_id"].isin(held)
        print(f"chexpert {split}: {int(out.sum())} images of {frame.loc[out, 'patient_id'].nunique()} patients "
              f"of {Path(holdout_csv).name} left out (the zero-shot test set)")
        frame = frame[~out]
    labels = [label for label in CHEXPERT_LABELS if label in frame]
    frame = frame.assign(_lateral=(frame["frontal_lateral"].astype(str).str.lower() != "frontal").astype(int))
    frame = frame.sort_values(["study_id", "_lateral", "path"], kind="stable")
    grouped = frame.groupby(["study_id", *labels], dropna=False, sort=False)["path"].agg(list)
    samples = []
    for key, paths in grouped.items():
        row = dict(zip(labels, key[1:]))
        samples.append(Sample(images=paths, values=row, positives=[label for label, v in row.items() if v == 1]))
    return samples


def read_chexpert5x200(csv: str | Path) -> pd.DataFrame:
    """GLoRIA's chexpert_5x200.csv (``Path``, the 5 class columns, optional ``Report Impression``) + ``patient_id``
    (the third-to-last component of ``Path``, e.g. ``patient64541``)."""
    frame = pd.read_csv(csv)
    if "Path" not in frame:
        raise ValueError(f"{csv}: missing column 'Path' (GLoRIA's chexpert_5x200.csv format)")
    parts = frame["Path"].astype(str).str.replace("\\", "/", regex=False).str.split("/")
    short = parts.str.len() < 3
    if short.any():
        raise ValueError(f"{csv}: line {int(short.to_numpy().argmax()) + 2}: Path {frame['Path'][short].iloc[0]!r} "
                         "has no patient folder (expected .../patientNNNNN/studyN/view.jpg)")
    return frame.assign(patient_id=parts.str[-3])


def chexpert5x200_patients(csv: str | Path) -> set[str]:
    return set(read_chexpert5x200(csv)["patient_id"])


def chest14_split(frame: pd.DataFrame) -> pd.DataFrame:
    """The original's ChestX-ray14 split: the official train_val_list images only (the test_list is never used),
    then ``train_test_split`` of the unique patients (in table order; test_size 0.2, random_state 0) -> 'train' /
    'val'. ``frame``: ``nih.read_index`` (its split is replaced by the shipped official lists)."""
    frame = splits.assign_split(frame, splits.nih_official())
    frame = frame[frame["split"] == "train"].copy()
    _, val_patients = train_test_split(frame["patient_id"].unique(), test_size=0.2, random_state=0)
    frame.loc[frame["patient_id"].isin(set(val_patients)), "split"] = "val"
    return frame


def chest14_samples(root: str | Path, split: str, on_missing: str = "error") -> list[Sample]:
    """ChestX-ray14 ``split`` of ``chest14_split``; an image without findings has positives ["No Finding"]."""
    frame = chest14_split(nih.read_index(root, on_missing=on_missing))
    frame = frame[frame["split"] == split]
    names = [P.chest14_name(label) for label in NIH_LABELS]
    flags = frame[NIH_LABELS].to_numpy() > 0
    return [Sample(images=[path], positives=[n for n, f in zip(names, row) if f] or [P.NO_FINDING])
            for path, row in zip(frame["path"], flags)]


def custom_samples(csv: str | Path, image_root: str | Path | None = None) -> list[Sample]:
    """CGMH-fork CSV: ``image`` = list of paths, ``text_label`` = list of positive labels (Python literals)."""
    frame = pd.read_csv(csv)
    missing = {"image", "text_label"} - set(frame.columns)
    if missing:
        raise ValueError(f"{csv}: missing column(s) {sorted(missing)}; expected image, text_label")
    root = Path(image_root) if image_root else Path(csv).parent
    samples = []
    for row_number, (images, labels) in enumerate(zip(frame["image"], frame["text_label"]), start=2):
        try:
            images, labels = _as_list(images), _as_list(labels)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{csv}: line {row_number}: cannot parse {images!r} / {labels!r}: {err}") from err
        samples.append(Sample(images=[str(root / p) for p in images], positives=labels))
    return samples


def _as_list(value) -> list[str]:
    """A list cell (``"['a', 'b']"``) or a plain string (one item) -> list; never indexes a string by character."""
    if isinstance(value, str) and value.strip().startswith("["):
        return [str(v) for v in ast.literal_eval(value)]
    return [] if pd.isna(value) else [str(value)]


def openi_frontal(frame: pd.DataFrame, projections_csv: str | Path | None = None) -> pd.DataFrame:
    """OpenI retrieval pairs as the original: one frontal image per report (``openi.read_reports(per="image")``).

    Frontal = ``projection == "Frontal"`` in ``projections_csv`` (Kaggle's ``indiana_projections.csv``: ``filename``
    such as ``1_IM-0001-4001.dcm.png``, ``projection``) when given; otherwise the report's first listed image (the
    NLMCXR XML lists the frontal view first). The first frontal image of each report is kept."""
    if projections_csv:
        table = pd.read_csv(projections_csv)
        missing = {"filename", "projection"} - set(table.columns)
        if missing:
            raise ValueError(f"{projections_csv}: missing column(s) {sorted(missing)}; expected filename, projection")
        ids = "CXR" + table["filename"].astype(str).str.replace(r"(\.dcm)?\.png$", "", regex=True)
        frontal = set(ids[table["projection"].astype(str).str.lower() == "frontal"])
        frame = frame[frame["image_id"].isin(frontal)]
    return frame.drop_duplicates("report_id").reset_index(drop=True)


def eval_image_paths(cells: pd.Series, root: str | Path, source: str | Path) -> list[str]:
    """An evaluation CSV's ``image`` column -> one path per row under ``root``. A cell may hold a path or a
    Python-literal list of paths (the original's CSVs, the CGMH fork's test CSV): its first path is used (the one
    the original evaluates); rows with more than one path are counted on stdout."""
    paths, several = [], 0
    for line, cell in enumerate(cells, start=2):
        try:
            items = _as_list(cell)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{source}: line {line}: cannot parse image cell {cell!r}: {err}") from err
        if not items:
            raise ValueError(f"{source}: line {line}: empty image cell")
        several += len(items) > 1
        paths.append(str(Path(root) / items[0]))
    if several:
        print(f"{source}: {several} rows list several images; the first of each is evaluated")
    return paths


def read_classification_csv(path: str | Path, classes: Sequence[str], label_names: Sequence[str] | None = None,
                            image_root: str | Path | None = None) -> tuple[list[str], np.ndarray]:
    """The classification CSV formats (RSNA / SIIM / VinDr) -> (image paths, labels (N, len(classes))).

    ``image`` (relative to the CSV's folder or ``image_root``) and either one 0/1 column per class, or a ``label``
    column: a scalar (one class), or a list such as VinDr's 20 values, named by ``label_names`` to pick ``classes``.
    Used by the linear probe (finetune.py) and binary zero-shot (test.py, ``eval.zeroshot_csv``)."""
    frame = pd.read_csv(path)
    if "image" not in frame:
        raise ValueError(f"{path}: missing column 'image'")
    root = Path(image_root) if image_root else Path(path).parent
    if all(c in frame for c in classes):
        labels = frame[list(classes)].to_numpy(np.float32)
    elif "label" in frame:
        values = [ast.literal_eval(v) if isinstance(v, str) else v for v in frame["label"]]
        if label_names:  # list-valued labels, named; keep the requested classes
            unknown = [c for c in classes if c not in label_names]
            if unknown:
                raise ValueError(f"{path}: classes {unknown} are not among the label names {list(label_names)}")
            index = [list(label_names).index(c) for c in classes]
            labels = np.asarray([[row[i] for i in index] for row in values], np.float32)
        else:
            labels = np.asarray(values, np.float32).reshape(len(frame), -1)
            if labels.shape[1] != len(classes):
                raise ValueError(f"{path}: 'label' holds {labels.shape[1]} value(s) per row for {len(classes)} "
                                 "class(es); name list-valued labels with label_names")
    else:
        raise ValueError(f"{path}: needs one column per class {classes} or a 'label' column")
    return eval_image_paths(frame["image"], root, path), labels
