"""MIMIC-CXR-JPG 2.0.0 (+ MIMIC-CXR reports) -> one index DataFrame; report parsing.

Expected layout (as downloaded from PhysioNet; the CSVs may be .gz)::

    root/mimic-cxr-2.0.0-split.csv        dicom_id, study_id, subject_id, split (train / validate / test)
    root/mimic-cxr-2.0.0-metadata.csv     dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
    root/mimic-cxr-2.0.0-chexpert.csv     subject_id, study_id, 14 labels (1.0 / 0.0 / -1.0 / blank)
    root/mimic-cxr-2.0.0-negbio.csv       the same columns from the NegBio labeler
    root/files/p10/p10000032/s50414267/<dicom_id>.jpg
    reports_root/files/p10/p10000032/s50414267.txt    (MIMIC-CXR, not -JPG; reports_root defaults to root)

Example (ADNet's MIMIC setting: NegBio labels, uncertain and blank -> 0, all views, CheXclusion's test subjects)::

    from shared.data import mimic, splits
    frame = mimic.read_index(root, labeler="negbio", uncertain="zeros",
                             test_subjects=splits.chexclusion_test_subjects("testSet_SubjID.csv"))

One row per image (from the split file, or the metadata file when there is no split file). Labels are per
study, joined on (subject_id, study_id); a study absent from the label file keeps blank labels (then the
``blank`` policy applies) and is counted in a warning (``missing_labels="warn"``; "error" raises, "drop" drops
with a warning). Label policies are those of ``shared.data.chexpert`` (``uncertain``: zeros / ones / ignore /
keep or a per-label dict with ``uncertain_default``; ``blank``: zeros / keep).

Columns: ``path``, ``image_id`` (= ``dicom_id``), ``dicom_id``, ``patient_id`` (= ``subject_id``, str),
``subject_id``, ``study_id`` (str), ``split`` ('train' / 'val' / 'test'), ``view`` (ViewPosition, '' when
unknown), ``rows``, ``columns`` when the metadata file is present, ``sex`` / ``age`` when ``patients_csv``
(MIMIC-IV ``patients.csv``: subject_id, gender, anchor_age) is given, ``findings`` / ``impression`` with
``with_reports=True``, then one float32 column per label (``labels.MIMIC_LABELS`` order by default).

Reports: ``read_report(path) -> {"findings": str, "impression": str}`` (whitespace collapsed; "" when a section
is absent); ``longer_section(report)`` is the longer of the two BY LENGTH (findings on a tie) — not the
alphabetical ``max()`` the original CXR-CLIP code used.
"""
from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ._common import (DataError, apply_missing, apply_policy, check_label_values, check_on_missing, find_file,
                      label_policies, read_csv, require_columns, walk_files)
from .labels import MIMIC_LABELS
from .splits import normalise_split_name

__all__ = ["read_index", "read_report", "parse_report", "longer_section", "image_path", "image_paths", "report_path",
           "LABELERS"]

LABELERS = ("negbio", "chexpert")
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&,()-]{1,60}?)[ \t]*:", re.MULTILINE)
_FINDINGS_KEYS = ("FINDINGS", "FINDING", "FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION")
_IMPRESSION_KEYS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS")


def image_path(root: str | os.PathLike, subject_id: str, study_id: str, dicom_id: str, ext: str = ".jpg") -> str:
    """``root/files/p{subject[:2]}/p{subject}/s{study}/{dicom}{ext}`` (absolute)."""
    s = str(subject_id)
    return os.path.join(os.path.abspath(root), "files", f"p{s[:2]}", f"p{s}", f"s{study_id}", f"{dicom_id}{ext}")


def image_paths(root: str | os.PathLike, subject_ids: pd.Series, study_ids: pd.Series, dicom_ids: pd.Series,
                ext: str = ".jpg") -> np.ndarray:
    """Vectorised ``image_path`` for whole columns (object array of absolute paths)."""
    base = os.path.join(os.path.abspath(root), "files") + os.sep
    s = subject_ids.astype(str)
    out = (base + "p" + s.str[:2] + os.sep + "p" + s + os.sep + "s" + study_ids.astype(str) + os.sep
           + dicom_ids.astype(str) + ext)
    return out.to_numpy(dtype=object)


def report_path(root: str | os.PathLike, subject_id: str, study_id: str) -> str:
    """``root/files/p{subject[:2]}/p{subject}/s{study}.txt`` (absolute)."""
    s = str(subject_id)
    return os.path.join(os.path.abspath(root), "files", f"p{s[:2]}", f"p{s}", f"s{study_id}.txt")


def parse_report(text: str) -> dict[str, str]:
    """Split a report into sections at upper-case ``HEADER:`` lines -> {"findings", "impression", "sections"}.

    A section runs from its header to the next header. "FINDINGS AND IMPRESSION:" counts as findings;
    "CONCLUSION:" as impression. ``sections`` holds every section found ({HEADER: text}).
    """
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = " ".join(text[m.end():end].split())
        key = " ".join(m.group(1).split())
        sections[key] = (sections[key] + " " + body).strip() if key in sections else body
    findings = next((sections[k] for k in _FINDINGS_KEYS if sections.get(k)), "")
    impression = next((sections[k] for k in _IMPRESSION_KEYS if sections.get(k)), "")
    return {"findings": findings, "impression": impression, "sections": sections}


def read_report(path: str | os.PathLike) -> dict[str, str]:
    """``{"findings": str, "impression": str}`` of one MIMIC-CXR report file (see ``parse_report``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise FileNotFoundError(f"MIMIC report not found: {path}") from None
    parsed = parse_report(text)
    return {"findings": parsed["findings"], "impression": parsed["impression"]}


def longer_section(report: Mapping[str, str]) -> str:
    """The longer of ``report["findings"]`` and ``report["impression"]`` by character count (findings on a tie)."""
    findings, impression = report.get("findings") or "", report.get("impression") or ""
    return findings if len(findings) >= len(impression) else impression


def _labels_table(root: Path, labeler: str, labels: Sequence[str], policies: Mapping[str, str], blank: str):
    source = find_file(root, (f"mimic-cxr-2.0.0-{labeler}.csv",), f"MIMIC {labeler} labels")
    raw = read_csv(source, dtype={"subject_id": str, "study_id": str})
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, ["subject_id", "study_id"] + list(labels), source)
    check_label_values(raw, labels, (1.0, 0.0, -1.0), source)
    dup = raw.duplicated(["subject_id", "study_id"])
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{source}: line {pos + 2}: study ({raw['subject_id'].iloc[pos]}, "
                        f"{raw['study_id'].iloc[pos]}) listed twice")
    out = raw[["subject_id", "study_id"]].copy()
    for lab in labels:
        out[lab] = pd.to_numeric(raw[lab], errors="coerce").to_numpy(np.float64)
    return out, source


def read_index(root: str | os.PathLike, labeler: str = "negbio", labels: Sequence[str] | None = None,
               uncertain: str | Mapping[str, str] = "zeros", uncertain_default: str = "zeros",
               blank: str = "zeros", views: Sequence[str] | None = None,
               test_subjects: Sequence[str] | None = None, missing_labels: str = "warn",
               patients_csv: str | os.PathLike | None = None, with_reports: bool = False,
               reports_root: str | os.PathLike | None = None, image_ext: str = ".jpg",
               check_files: bool = True, on_missing: str = "error", workers: int = 8) -> pd.DataFrame:
    """Read MIMIC-CXR-JPG under ``root`` (see the module docstring).

    ``views``: keep only these ViewPosition values (e.g. ``["PA", "AP"]``; default all). ``test_subjects``:
    when given, split = 'test' for these subject ids and 'train' for every other image (CheXclusion's split)
    instead of the official split. ``image_ext``: ".jpg" (MIMIC-CXR-JPG) or e.g. ".png" for a resized copy.
    """
    check_on_missing(on_missing)
    if labeler not in LABELERS:
        raise ValueError(f"labeler must be one of {LABELERS}, got {labeler!r}")
    if missing_labels not in ("warn", "error", "drop"):
        raise ValueError(f"missing_labels must be 'warn', 'error' or 'drop', got {missing_labels!r}")
    labels = list(MIMIC_LABELS if labels is None else labels)
    policies = label_policies("MIMIC", labels, MIMIC_LABELS, uncertain, uncertain_default, blank)
    root = Path(root).expanduser().resolve()

    split_file = find_file(root, ("mimic-cxr-2.0.0-split.csv",), "MIMIC split", required=False)
    meta_file = find_file(root, ("mimic-cxr-2.0.0-metadata.csv",), "MIMIC metadata", required=False)
    if split_file is None and meta_file is None:
        raise DataError(f"MIMIC: neither mimic-cxr-2.0.0-split.csv nor -metadata.csv (optionally .gz) in {root}")
    ids = ["dicom_id", "study_id", "subject_id"]
    if split_file is not None:
        base = read_csv(split_file, dtype=str)
        require_columns(base, ids + ["split"], split_file)
        base = base[ids + ["split"]].copy()
        bad = ~base["split"].str.strip().str.lower().isin(["train", "validate", "valid", "val", "test"])
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{split_file}: line {pos + 2}, column 'split': unknown split {base['split'].iloc[pos]!r}")
        base["split"] = base["split"].str.strip().str.lower().map(normalise_split_name)
    else:
        base = None
    if meta_file is not None:
        meta = read_csv(meta_file, dtype={"dicom_id": str, "study_id": str, "subject_id": str,
                                          "ViewPosition": str})
        require_columns(meta, ids + ["ViewPosition"], meta_file)
        keep = ids + ["ViewPosition"] + [c for c in ("Rows", "Columns") if c in meta.columns]
        meta = meta[keep].rename(columns={"ViewPosition": "view", "Rows": "rows", "Columns": "columns"})
        if base is None:
            base = meta.assign(split="unlisted")
        else:
            extra = meta.drop(columns=["study_id", "subject_id"])
            base = base.merge(extra, on="dicom_id", how="left", validate="one_to_one")
    else:
        base["view"] = ""
    for col in ids:
        base[col] = base[col].astype(str).str.strip()
    base["view"] = base["view"].fillna("").astype(str)
    if base["dicom_id"].duplicated().any():
        raise DataError(f"MIMIC: dicom_id {base['dicom_id'][base['dicom_id'].duplicated()].iloc[0]!r} listed twice")

    if test_subjects is not None:
        test_set = {str(s).strip() for s in test_subjects}
        base["split"] = np.where(base["subject_id"].isin(test_set), "test", "train")

    table, label_source = _labels_table(root, labeler, labels, policies, blank)
    frame = base.merge(table, on=["subject_id", "study_id"], how="left", indicator="_labelled")
    unlabelled = (frame.pop("_labelled") == "left_only").to_numpy()
    n_unlabelled = int(unlabelled.sum())
    if n_unlabelled:
        msg = (f"MIMIC: {n_unlabelled} images ({frame.loc[unlabelled, 'study_id'].nunique()} studies) have no row "
               f"in {label_source.name}, e.g. study {frame.loc[unlabelled, 'study_id'].iloc[0]}")
        if missing_labels == "error":
            raise DataError(msg)
        if missing_labels == "drop":
            warnings.warn(msg + f"; dropped {n_unlabelled} images", stacklevel=2)
            frame = frame.loc[~unlabelled].reset_index(drop=True)
        else:
            warnings.warn(msg + f"; their labels are blank (blank policy {blank!r})", stacklevel=2)
    for lab in labels:
        frame[lab] = apply_policy(frame[lab].to_numpy(np.float64), policies[lab], blank, lab)

    if views is not None:
        frame = frame.loc[frame["view"].isin(list(views))].reset_index(drop=True)

    frame.insert(0, "path", image_paths(root, frame["subject_id"], frame["study_id"], frame["dicom_id"], image_ext))
    frame.insert(1, "image_id", frame["dicom_id"])
    frame.insert(2, "patient_id", frame["subject_id"])

    if patients_csv is not None:
        patients = read_csv(Path(patients_csv), dtype={"subject_id": str})
        require_columns(patients, ("subject_id", "gender", "anchor_age"), patients_csv)
        patients = patients[["subject_id", "gender", "anchor_age"]].rename(
            columns={"gender": "sex", "anchor_age": "age"})
        patients["subject_id"] = patients["subject_id"].str.strip()
        frame = frame.merge(patients.drop_duplicates("subject_id"), on="subject_id", how="left")
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce").astype("float32")

    label_order = [c for c in frame.columns if c not in labels] + labels
    frame = frame[label_order]
    frame.attrs = {"label_columns": labels, "labeler": labeler, "source": str(label_source),
                   "images_without_labels": n_unlabelled}

    if check_files:
        present_files = walk_files(root / "files", (image_ext.lower(),))
        present = frame["path"].isin(present_files).to_numpy()
        frame = apply_missing(frame, present, on_missing, f"MIMIC images under {root / 'files'}")

    if with_reports:
        rroot = Path(reports_root).expanduser().resolve() if reports_root is not None else root
        studies = frame[["subject_id", "study_id"]].drop_duplicates()
        paths = [report_path(rroot, s, st) for s, st in zip(studies["subject_id"], studies["study_id"])]
        exists = walk_files(rroot / "files", (".txt",))
        present_study = np.array([p in exists for p in paths], dtype=bool)
        if not present_study.all():
            missing = [p for p, ok in zip(paths, present_study) if not ok]
            msg = f"MIMIC: {len(missing)} of {len(paths)} report files missing, e.g. {missing[:3]}"
            if on_missing == "error":
                raise FileNotFoundError(msg + " (pass on_missing='warn' to skip those images with a warning)")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reports = list(pool.map(lambda p: read_report(p) if p in exists else None, paths))
        key = list(zip(studies["subject_id"], studies["study_id"]))
        by_study = dict(zip(key, reports))
        got = [by_study[(s, st)] for s, st in zip(frame["subject_id"], frame["study_id"])]
        has = np.array([r is not None for r in got], dtype=bool)
        if not has.all():
            warnings.warn(msg + f"; skipped {int((~has).sum())} images", stacklevel=2)
            attrs = dict(frame.attrs)
            frame = frame.loc[has].reset_index(drop=True)
            got = [r for r in got if r is not None]
            frame.attrs = attrs | {"skipped_missing_reports": int((~has).sum())}
        pos = frame.columns.get_loc(labels[0]) if labels else len(frame.columns)
        frame.insert(pos, "findings", [r["findings"] for r in got])
        frame.insert(pos + 1, "impression", [r["impression"] for r in got])
    return frame.reset_index(drop=True)
