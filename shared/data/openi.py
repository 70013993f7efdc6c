"""OpenI / Indiana University chest X-ray reports (NLMCXR) -> one DataFrame with findings and impression.

Expected layout (the two NLMCXR archives extracted)::

    root/ecgen-radiology/1.xml ... 3955 report XML files   (or a reports archive: root/NLMCXR_reports.tgz, or
                                                           ``reports=`` pointing at any folder / .tgz of XMLs)
    root/images/CXR1_1_IM-0001-3001.png ...               (also accepted: root/NLMCXR_png/ or root itself)

Each XML report (``<eCitation>``) has ``<uId id="CXR1"/>``, ``<AbstractText Label="COMPARISON|INDICATION|FINDINGS|
IMPRESSION">``, ``<MeSH><major>`` terms and one ``<parentImage id="...">`` per image.

``read_reports(root, per="image")`` -> one row per image: ``path`` (``images/<parentImage id>.png``),
``image_id``, ``report_id`` (the uId), ``patient_id`` and ``study_id`` (= report_id: OpenI has one study per
anonymous patient), ``split`` ("test": OpenI is an evaluation set), ``findings``, ``impression``,
``indication``, ``comparison`` (whitespace collapsed, "" when absent or empty), ``mesh`` ('|'-joined major
MeSH terms). A report without any image (104 of the real 3,955) cannot have an image row: by default a warning
counts them (``without_images="warn"``; ``"error"`` raises a :class:`DataError` instead) and their ids are in
``frame.attrs["reports_without_images"]`` -- never a silent drop. Image files that are missing follow
``on_missing`` like every reader ("error" by default, "warn" skips them with a counted warning).
``per="report"`` -> one row per report with ``image_ids`` (a list) instead of path/image_id; no file check.
``read_index`` is the same function (the index-reader name every dataset has).
"""
from __future__ import annotations

import os
import tarfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pandas as pd

from ._common import DataError, apply_missing, check_on_missing, scan_files

__all__ = ["read_reports", "read_index", "parse_report_xml"]

_SECTIONS = {"FINDINGS": "findings", "IMPRESSION": "impression", "INDICATION": "indication",
             "COMPARISON": "comparison"}


def parse_report_xml(data: bytes | str, source: str = "<xml>") -> dict:
    """One NLMCXR XML report -> {report_id, findings, impression, indication, comparison, mesh, image_ids}."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"cannot parse OpenI report {source}: {exc}") from exc
    uid = root.find("uId")
    report_id = uid.get("id") if uid is not None else None
    if not report_id:
        raise DataError(f"{source}: no <uId id=...> element")
    out = {"report_id": report_id, **{v: "" for v in _SECTIONS.values()}}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        if label in _SECTIONS:
            out[_SECTIONS[label]] = " ".join("".join(node.itertext()).split())
    out["mesh"] = "|".join(" ".join((m.text or "").split()) for m in root.iter("major") if (m.text or "").strip())
    out["image_ids"] = [img.get("id") for img in root.iter("parentImage") if img.get("id")]
    return out


def _iter_xml(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_dir():
        for name in sorted(os.listdir(source)):
            if name.lower().endswith(".xml"):
                yield str(source / name), (source / name).read_bytes()
    else:
        with tarfile.open(source, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.lower().endswith(".xml"):
                    yield f"{source}:{member.name}", tar.extractfile(member).read()


def _find_reports(root: Path) -> Path:
    for cand in (root / "ecgen-radiology", root / "NLMCXR_reports.tgz", root / "NLMCXR_reports.tar.gz"):
        if cand.exists():
            return cand
    if root.is_dir() and any(n.lower().endswith(".xml") for n in os.listdir(root)):
        return root
    raise DataError(f"OpenI: no ecgen-radiology/ folder, NLMCXR_reports.tgz or *.xml files in {root}")


def read_reports(root: str | os.PathLike, per: str = "image", reports: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None, image_ext: str = ".png", check_files: bool = True,
                 on_missing: str = "error", without_images: str = "warn") -> pd.DataFrame:
    """Read every OpenI report under ``root`` (see the module docstring)."""
    check_on_missing(on_missing)
    if without_images not in ("warn", "error"):
        raise ValueError(f"without_images must be 'warn' or 'error', got {without_images!r}")
    if per not in ("image", "report"):
        raise ValueError(f"per must be 'image' or 'report', got {per!r}")
    root = Path(root).expanduser().resolve()
    source = Path(reports).expanduser().resolve() if reports is not None else _find_reports(root)
    parsed = [parse_report_xml(data, name) for name, data in _iter_xml(source)]
    if not parsed:
        raise DataError(f"OpenI: no XML reports in {source}")
    ids = [p["report_id"] for p in parsed]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(f"OpenI: report {dup!r} appears twice in {source}")
    cols = ["report_id", "findings", "impression", "indication", "comparison", "mesh"]
    if per == "report":
        frame = pd.DataFrame([{**{c: p[c] for c in cols}, "image_ids": p["image_ids"]} for p in parsed])
        frame.insert(1, "patient_id", frame["report_id"])
        frame.insert(2, "study_id", frame["report_id"])
        frame.insert(3, "split", "test")
        frame.attrs = {"label_columns": [], "source": str(source)}
        return frame
    if images is not None:
        image_dir = Path(images).expanduser().resolve()
    else:
        image_dir = next((d for d in (root / "images", root / "NLMCXR_png") if d.is_dir()), root)
    rows = [{"image_id": img, **{c: p[c] for c in cols}} for p in parsed for img in p["image_ids"]]
    frame = pd.DataFrame(rows, columns=["image_id"] + cols)
    frame.insert(0, "path", [os.path.join(image_dir, f"{i}{image_ext}") for i in frame["image_id"]])
    frame.insert(2, "patient_id", frame["report_id"])
    frame.insert(3, "study_id", frame["report_id"])
    frame.insert(4, "split", "test")
    no_image = [p["report_id"] for p in parsed if not p["image_ids"]]
    frame.attrs = {"label_columns": [], "source": str(source), "reports_without_images": no_image}
    if no_image:
        msg = (f"OpenI: {len(no_image)} of {len(parsed)} reports in {source} list no image, so this per-image "
               f"frame has no row for them (e.g. {', '.join(no_image[:5])}; all ids in "
               f"frame.attrs['reports_without_images']; per='report' keeps them)")
        if without_images == "error":
            raise DataError(msg + "; pass without_images='warn' to read the others")
        warnings.warn(msg, stacklevel=2)
    if check_files:
        present = frame["path"].isin(set(scan_files(image_dir, (image_ext.lower(),)).values())).to_numpy()
        frame = apply_missing(frame, present, on_missing, f"OpenI images in {image_dir}")
    return frame.reset_index(drop=True)


read_index = read_reports
