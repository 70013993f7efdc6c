"""Chest ImaGenome 1.0.0 silver scene graphs (anatomy boxes + attributes), over MIMIC-CXR-JPG images.

Expected layout::

    root/silver/scene_graph/<dicom_id>_SceneGraph.json     (also accepted: root/silver_dataset/scene_graph/,
                                                             root/scene_graph/, or root itself)
    mimic_root/...                                          the MIMIC-CXR-JPG layout (see shared.data.mimic);
                                                             defaults to root

``read_scene_graph(path) -> SceneGraph`` is the raw parse of one file:

* ``boxes``: {bbox_name: (x1, y1, x2, y2)} in ORIGINAL image pixels (``original_x1..original_y2``; files that
  only have ``x``/``y``/``width``/``height`` or ``x1..y2`` give those), for every object in the file — the 18
  anatomies of ``labels.IMAGENOME_ANATOMIES`` and any others; ``missing_anatomies`` lists the 18 absent ones;
* ``boxes_224``: the same boxes at ImaGenome's 224 scale (``x1..y2``) where present;
* ``attributes``: {bbox_name: [(category, relation, finding), ...]} — every "category|yes/no|finding" string in
  file order (flattened over the phrases), so both "yes wins" and "last one wins" policies can be built on top.
  The per-anatomy 18 x 9 label policy is the caller's (CheXtriev's helper builds it).

``read_index(root, mimic_root=None, ...)`` lists the scene-graph files (one directory listing) and joins the
MIMIC split and metadata: columns ``path`` (the MIMIC JPEG), ``image_id`` (dicom_id), ``patient_id``,
``study_id``, ``split`` ('train' / 'val' / 'test'), ``view``, ``scene_graph`` (the JSON path). With
``with_labels=True`` it parses every graph (thread pool) and adds the 9 ``IMAGENOME_FINDINGS`` image-level
columns (1 if any anatomy says "|yes|<finding>", yes wins) and ``n_anatomies`` (how many of the 18 are present).
"""
from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import DataError, apply_missing, check_on_missing, find_file, read_csv, require_columns, walk_files
from .labels import IMAGENOME_ANATOMIES, IMAGENOME_FINDINGS
from .mimic import image_paths
from .splits import mimic_official

__all__ = ["SceneGraph", "read_scene_graph", "read_index", "find_scene_graph_dir"]

SUFFIX = "_SceneGraph.json"


@dataclass
class SceneGraph:
    """One parsed ImaGenome scene graph (see the module docstring)."""

    image_id: str
    patient_id: str
    study_id: str
    view: str
    boxes: dict[str, tuple[float, float, float, float]]
    attributes: dict[str, list[tuple[str, str, str]]]
    boxes_224: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    sex: str = ""
    age_decile: str = ""
    path: str = ""

    @property
    def missing_anatomies(self) -> list[str]:
        return [a for a in IMAGENOME_ANATOMIES if a not in self.boxes]

    def box_xywh(self, name: str) -> tuple[float, float, float, float]:
        """The box of ``name`` as (x, y, w, h) in original pixels."""
        x1, y1, x2, y2 = self.boxes[name]
        return (x1, y1, x2 - x1, y2 - y1)


def _box(obj: dict, prefix: str) -> tuple[float, float, float, float] | None:
    keys = [f"{prefix}x1", f"{prefix}y1", f"{prefix}x2", f"{prefix}y2"]
    if all(k in obj for k in keys):
        return tuple(float(obj[k]) for k in keys)  # type: ignore[return-value]
    keys = [f"{prefix}x", f"{prefix}y", f"{prefix}width", f"{prefix}height"]
    if all(k in obj for k in keys):
        x, y, w, h = (float(obj[k]) for k in keys)
        return (x, y, x + w, y + h)
    return None


def read_scene_graph(path: str | os.PathLike) -> SceneGraph:
    """Parse one ``<dicom_id>_SceneGraph.json``; any structural problem raises ``DataError`` naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            graph = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"scene graph not found: {path}") from None
    except Exception as exc:
        raise DataError(f"cannot read scene graph {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(graph, dict) or "objects" not in graph:
        raise DataError(f"{path}: not a scene graph (no 'objects')")
    stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
    image_id = str(graph.get("image_id") or stem)
    boxes, boxes_224 = {}, {}
    for k, obj in enumerate(graph["objects"]):
        name = obj.get("bbox_name")
        if not name:
            raise DataError(f"{path}: object {k} has no bbox_name")
        box = _box(obj, "original_")
        small = _box(obj, "")
        if box is None and small is None:
            raise DataError(f"{path}: object {name!r} has no box coordinates")
        boxes[name] = box if box is not None else small
        if small is not None:
            boxes_224[name] = small
    attributes: dict[str, list[tuple[str, str, str]]] = {}
    for entry in graph.get("attributes", []):
        name = entry.get("bbox_name")
        if not name:
            raise DataError(f"{path}: an attributes entry has no bbox_name")
        items = attributes.setdefault(name, [])
        for group in entry.get("attributes", []):
            for text in (group if isinstance(group, list) else [group]):
                parts = str(text).split("|")
                if len(parts) != 3:
                    raise DataError(f"{path}: attribute {text!r} of {name!r} is not 'category|yes/no|finding'")
                items.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    return SceneGraph(image_id=image_id, patient_id=str(graph.get("patient_id", "")),
                      study_id=str(graph.get("study_id", "")), view=str(graph.get("viewpoint", "") or ""),
                      boxes=boxes, attributes=attributes, boxes_224=boxes_224,
                      sex=str(graph.get("gender", "") or ""), age_decile=str(graph.get("age_decile", "") or ""),
                      path=str(path))


def find_scene_graph_dir(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser().resolve()
    for cand in (root / "silver" / "scene_graph", root / "silver_dataset" / "scene_graph", root / "scene_graph",
                 root):
        if cand.is_dir() and any(e.name.endswith(SUFFIX) for e in os.scandir(cand)):
            return cand
    raise DataError(f"ImaGenome: no *{SUFFIX} files in {root}/silver/scene_graph/ (or silver_dataset/scene_graph/, "
                    "scene_graph/, or the root itself)")


def _image_labels(path: str) -> tuple[list[float], int]:
    g = read_scene_graph(path)
    yes = {f for items in g.attributes.values() for (_c, rel, f) in items if rel == "yes"}
    return [1.0 if f in yes else 0.0 for f in IMAGENOME_FINDINGS], 18 - len(g.missing_anatomies)


def read_index(root: str | os.PathLike, mimic_root: str | os.PathLike | None = None, with_labels: bool = False,
               check_files: bool = True, on_missing: str = "error", image_ext: str = ".jpg",
               workers: int = 8) -> pd.DataFrame:
    """One row per scene graph, joined with the MIMIC split/metadata (see the module docstring).

    A scene graph whose dicom_id is not in the MIMIC split file raises (or, ``on_missing="warn"``, is skipped
    with a warning that counts them), as does a missing JPEG when ``check_files``.
    """
    check_on_missing(on_missing)
    sg_dir = find_scene_graph_dir(root)
    mroot = Path(mimic_root if mimic_root is not None else root).expanduser().resolve()
    with os.scandir(sg_dir) as it:
        files = sorted(e.name for e in it if e.name.endswith(SUFFIX))
    frame = pd.DataFrame({"image_id": [f[: -len(SUFFIX)] for f in files],
                          "scene_graph": [os.path.join(sg_dir, f) for f in files]})
    official = mimic_official(mroot)
    meta_file = find_file(mroot, ("mimic-cxr-2.0.0-metadata.csv",), "MIMIC metadata", required=False)
    if meta_file is not None:
        meta = read_csv(meta_file, dtype={"dicom_id": str, "ViewPosition": str})
        require_columns(meta, ("dicom_id", "ViewPosition"), meta_file)
        official = official.merge(meta[["dicom_id", "ViewPosition"]].rename(columns={"ViewPosition": "view"}),
                                  on="dicom_id", how="left")
    else:
        official["view"] = ""
    frame = frame.merge(official.rename(columns={"dicom_id": "image_id"}), on="image_id", how="left")
    unknown = frame["subject_id"].isna().to_numpy()
    if unknown.any():
        msg = (f"ImaGenome: {int(unknown.sum())} scene graphs in {sg_dir} name images absent from the MIMIC split "
               f"file in {mroot}, e.g. {frame.loc[unknown, 'image_id'].iloc[0]}")
        if on_missing == "error":
            raise DataError(msg + " (pass on_missing='warn' to skip them with a warning)")
        warnings.warn(msg + f"; skipped {int(unknown.sum())}", stacklevel=2)
        frame = frame.loc[~unknown].reset_index(drop=True)
    frame["view"] = frame["view"].fillna("").astype(str)
    frame.insert(0, "path", image_paths(mroot, frame["subject_id"], frame["study_id"], frame["image_id"], image_ext))
    frame.insert(2, "patient_id", frame.pop("subject_id"))
    frame = frame[["path", "image_id", "patient_id", "study_id", "split", "view", "scene_graph"]]
    frame.attrs = {"label_columns": [], "scene_graph_dir": str(sg_dir)}
    if check_files:
        present = frame["path"].isin(walk_files(mroot / "files", (image_ext.lower(),))).to_numpy()
        frame = apply_missing(frame, present, on_missing, f"ImaGenome/MIMIC images under {mroot / 'files'}")
    if with_labels:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            def tqdm(x, **_):
                return x
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            parsed = list(tqdm(pool.map(_image_labels, frame["scene_graph"]), total=len(frame),
                               desc="scene graphs", disable=len(frame) < 1000))
        values = np.array([p[0] for p in parsed], dtype=np.float32).reshape(len(frame), len(IMAGENOME_FINDINGS))
        frame["n_anatomies"] = np.array([p[1] for p in parsed], dtype=np.int64)
        for j, f in enumerate(IMAGENOME_FINDINGS):
            frame[f] = values[:, j]
        frame.attrs["label_columns"] = list(IMAGENOME_FINDINGS)
    return frame.reset_index(drop=True)
