"""Chest ImaGenome scene graphs + MIMIC-CXR-JPG -> CheXtriev's per-image anatomy table.

    python -m chextriev.prepare --mimic MIMIC_ROOT --imagenome IMAGENOME_ROOT --out DIR [--label-policy yes_wins]

Reads every ``silver/scene_graph/<dicom_id>_SceneGraph.json`` (``shared.data.imagenome``), joins the MIMIC official
split and metadata, and writes into DIR:

    index.csv        one row per kept image: image_id, path, patient_id, study_id, split, view, sex, age, rows,
                     columns, then the 9 image labels (OR over the 18 anatomies), in a stable order (split, id)
    boxes.npy        (N, 18, 4) float32 anatomy boxes [x, y, w, h] in original image pixels (category_id order)
    labels.npy       (N, 18, 9) uint8 anatomy x finding labels
    records.jsonl    the original's record layout: {image_id, file_name, annotations: [{id "<dicom>_<anatomy>",
                     category_id, bbox [x,y,w,h], attributes: 9 ints}]}
    cooccurrence.npy (18, 18) float32 anatomy co-occurrence score (train split); adjacency.npy its binarisation
    excluded.csv     every scene graph not kept and why (missing anatomies / image not in the split file /
                     image file missing / image file undecodable) -- nothing is dropped silently
    meta.json        counts, label policy, sources

Label policy: a finding of an anatomy is 1 if the graph says "<category>|yes|<finding>" for it. ``yes_wins`` (ours,
default): any "yes" counts. ``last_wins`` (the original's behaviour, a bug): the attribute strings are read in file
order and a later "|no|" for the same finding overwrites an earlier "|yes|".

Images: a listed image file that is absent stops the preparation naming it (``--on-missing warn``: excluded, with a
warning that counts them); so does one that cannot be decoded, found when ``--verify`` decodes every image once
before the graphs are parsed (``--on-bad-image warn``: excluded and counted alike, which decodes them too).

Resumable: graphs are parsed in chunks saved under DIR/.partial/; a killed run continues from the last chunk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from shared.progress import Progress

from shared.cli import cli_exit
from shared.data import imagenome
from shared.data._common import DataError, apply_missing, find_file, read_csv
from shared.data.images import check_frame_images
from shared.data.labels import IMAGENOME_ANATOMIES, IMAGENOME_FINDINGS

POLICIES = ("yes_wins", "last_wins")
CHUNK = 2000
FILES = ("index.csv", "boxes.npy", "labels.npy", "records.jsonl", "cooccurrence.npy", "adjacency.npy",
         "excluded.csv", "meta.json")


# ------------------------------------------------------------------------------------------- one graph
def anatomy_labels(graph: imagenome.SceneGraph, policy: str = "yes_wins") -> np.ndarray:
    """(18, 9) uint8 labels of one parsed scene graph under ``policy`` (see the module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"label policy must be one of {POLICIES}, got {policy!r}")
    out = np.zeros((len(IMAGENOME_ANATOMIES), len(IMAGENOME_FINDINGS)), dtype=np.uint8)
    a_index = {a: i for i, a in enumerate(IMAGENOME_ANATOMIES)}
    f_index = {f: j for j, f in enumerate(IMAGENOME_FINDINGS)}
    for name, items in graph.attributes.items():
        i = a_index.get(name)
        if i is None:
            continue
        for _category, relation, finding in items:
            j = f_index.get(finding)
            if j is None:
                continue
            if relation == "yes":
                out[i, j] = 1
            elif relation == "no" and policy == "last_wins":
                out[i, j] = 0
    return out


def parse_graph(path: str, policy: str) -> dict:
    g = imagenome.read_scene_graph(path)
    missing = g.missing_anatomies
    boxes = np.zeros((len(IMAGENOME_ANATOMIES), 4), dtype=np.float32)
    for i, a in enumerate(IMAGENOME_ANATOMIES):
        if a in g.boxes:
            boxes[i] = g.box_xywh(a)
    return {"missing": missing, "boxes": boxes, "labels": anatomy_labels(g, policy), "sex": g.sex,
            "age_decile": g.age_decile, "view": g.view}


def age_from_decile(decile: str) -> float:
    """ImaGenome's "50-60" -> 55.0 (the middle of the decile; NaN when absent or unparsable)."""
    try:
        lo, hi = (float(v) for v in str(decile).replace(">", "").split("-"))
        return (lo + hi) / 2
    except ValueError:
        return float("nan")


# ------------------------------------------------------------------------------------------ adjacency
def macro_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """sklearn's ``jaccard_score(a, b, average="macro")`` for 0/1 vectors: the mean over the labels present in
    either vector of J(1) = tp / (tp + fp + fn) and J(0) = tn / (tn + fp + fn)."""
    a, b = a.astype(bool), b.astype(bool)
    tp, tn = int((a & b).sum()), int((~a & ~b).sum())
    fp, fn = int((~a & b).sum()), int((a & ~b).sum())
    scores = []
    if (a | b).any():
        scores.append(tp / max(tp + fp + fn, 1))
    if (~a | ~b).any():
        scores.append(tn / max(tn + fp + fn, 1))
    return float(np.mean(scores)) if scores else 0.0


def cooccurrence(labels: np.ndarray) -> np.ndarray:
    """(N, 18, 9) anatomy labels -> (18, 18) co-occurrence score.

    For each anatomy pair (i, j): the images where anatomy i or j has any positive finding; over those, the
    macro-Jaccard of the two anatomies' labels for each of the 9 findings, averaged over the findings. 0 when no
    image has either anatomy positive. Diagonal 1.
    """
    labels = np.asarray(labels).astype(bool)
    n_anat = labels.shape[1]
    any_pos = labels.any(2)                                   # (N, 18)
    out = np.eye(n_anat, dtype=np.float32)
    for i in range(n_anat):
        for j in range(i + 1, n_anat):
            rows = any_pos[:, i] | any_pos[:, j]
            if not rows.any():
                continue
            li, lj = labels[rows, i], labels[rows, j]
            out[i, j] = out[j, i] = np.mean([macro_jaccard(li[:, d], lj[:, d]) for d in range(labels.shape[2])])
    return out


def binarise_adjacency(score: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    adj = (np.asarray(score) > threshold).astype(np.uint8)
    np.fill_diagonal(adj, 1)
    return adj


# ----------------------------------------------------------------------------------------------- main
def _metadata_sizes(mimic_root: Path) -> pd.DataFrame | None:
    meta = find_file(mimic_root, ("mimic-cxr-2.0.0-metadata.csv",), "MIMIC metadata", required=False)
    if meta is None:
        return None
    frame = read_csv(meta, dtype={"dicom_id": str})
    if not {"Rows", "Columns"} <= set(frame.columns):
        return None
    return frame[["dicom_id", "Rows", "Columns"]].rename(
        columns={"dicom_id": "image_id", "Rows": "rows", "Columns": "columns"})


def _parse_chunks(frame: pd.DataFrame, partial: Path, policy: str, workers: int) -> list[dict]:
    partial.mkdir(parents=True, exist_ok=True)
    stamp = partial / "params.json"
    params = {"n": len(frame), "policy": policy, "first": frame["image_id"].iloc[0] if len(frame) else "",
              "last": frame["image_id"].iloc[-1] if len(frame) else "", "chunk": CHUNK}
    if stamp.exists() and json.loads(stamp.read_text()) != params:
        shutil.rmtree(partial)                                 # a different input or policy: start over
        partial.mkdir(parents=True)
    stamp.write_text(json.dumps(params))
    n_chunks = (len(frame) + CHUNK - 1) // CHUNK
    done = sum((partial / f"chunk_{c:05d}.npz").exists() for c in range(n_chunks))
    bar = Progress(total=len(frame), desc="scene graphs", unit="graph", initial=min(done * CHUNK, len(frame)))
    results = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for c in range(n_chunks):
            path = partial / f"chunk_{c:05d}.npz"
            rows = frame.iloc[c * CHUNK:(c + 1) * CHUNK]
            if not path.exists():
                parsed = list(pool.map(lambda p: parse_graph(p, policy), rows["scene_graph"]))
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, boxes=np.stack([p["boxes"] for p in parsed]),
                         labels=np.stack([p["labels"] for p in parsed]),
                         missing=np.array(["|".join(p["missing"]) for p in parsed], dtype=object),
                         sex=np.array([p["sex"] for p in parsed], dtype=object),
                         age_decile=np.array([p["age_decile"] for p in parsed], dtype=object))
                os.replace(tmp, path)
                bar.update(len(rows))
            with np.load(path, allow_pickle=True) as z:
                results.append({k: z[k] for k in z.files})
    bar.close()
    return results


def prepare(mimic_root: str | os.PathLike, imagenome_root: str | os.PathLike, out: str | os.PathLike,
            policy: str = "yes_wins", check_files: bool = True, workers: int = 8,
            adjacency_split: str = "train", threshold: float = 0.5, on_missing: str = "error",
            verify: bool = False, on_bad_image: str = "error") -> Path:
    """Run the whole preparation (see the module docstring); returns ``out``.

    ``on_missing``: a scene graph whose image file is absent stops the preparation naming the files ("error", as
    every reader does), or is listed in excluded.csv with a warning that counts them ("warn"). ``verify``: decode
    every image once first; ``on_bad_image`` treats an undecodable one as ``on_missing`` treats an absent one
    (``shared.data.images.check_frame_images``; "warn" decodes every image too)."""
    if policy not in POLICIES:
        raise ValueError(f"label policy must be one of {POLICIES}, got {policy!r}")
    mimic_root, imagenome_root, out = Path(mimic_root), Path(imagenome_root), Path(out)
    if not mimic_root.is_dir():
        raise DataError(f"MIMIC-CXR-JPG root not found: {mimic_root} (expected mimic-cxr-2.0.0-split.csv and "
                        "files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg under it)")
    if not imagenome_root.is_dir():
        raise DataError(f"Chest ImaGenome root not found: {imagenome_root} (expected "
                        "silver/scene_graph/<dicom_id>_SceneGraph.json under it)")
    out.mkdir(parents=True, exist_ok=True)
    excluded = []
    frame = imagenome.read_index(imagenome_root, mimic_root=mimic_root, check_files=False, on_missing="warn")
    listed = {p.name[: -len(imagenome.SUFFIX)]
              for p in Path(frame.attrs["scene_graph_dir"]).glob(f"*{imagenome.SUFFIX}")}
    for image_id in sorted(listed - set(frame["image_id"])):
        excluded.append((image_id, "not in the MIMIC split file"))
    if check_files:
        present = np.array([os.path.isfile(p) for p in frame["path"]])
        frame = apply_missing(frame, present, on_missing, f"MIMIC-CXR-JPG images of {imagenome_root}",
                              fix="pass --on-missing warn (on_missing='warn')")
        excluded += [(image_id, "image file missing") for image_id in frame.attrs.pop("missing_ids", [])]
    checked = check_frame_images(frame, verify, on_bad_image, workers, skip_hint="pass --on-bad-image warn")
    excluded += [(image_id, "image file undecodable")
                 for image_id in frame.loc[~frame["image_id"].isin(checked["image_id"]), "image_id"]]
    frame = checked
    if frame.empty:
        raise DataError(f"no usable scene graph in {imagenome_root} matches an image of {mimic_root}")
    parts = _parse_chunks(frame, out / ".partial", policy, workers)
    boxes = np.concatenate([p["boxes"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    missing = np.concatenate([p["missing"] for p in parts])
    frame["sex"] = np.concatenate([p["sex"] for p in parts])
    frame["age"] = [age_from_decile(d) for d in np.concatenate([p["age_decile"] for p in parts])]
    keep = np.array([m == "" for m in missing])
    for image_id, m in zip(frame.loc[~keep, "image_id"], missing[~keep]):
        excluded.append((image_id, f"missing anatomies: {m.replace('|', ', ')}"))
    frame, boxes, labels = frame.loc[keep].reset_index(drop=True), boxes[keep], labels[keep]
    sizes = _metadata_sizes(mimic_root)
    if sizes is not None:
        frame = frame.merge(sizes, on="image_id", how="left")
    else:
        frame["rows"], frame["columns"] = np.nan, np.nan
    image_labels = labels.any(1).astype(np.float32)
    for j, f in enumerate(IMAGENOME_FINDINGS):
        frame[f] = image_labels[:, j]
    order = np.lexsort((frame["image_id"].to_numpy(), frame["split"].map({"train": 0, "val": 1, "test": 2})))
    frame, boxes, labels = frame.iloc[order].reset_index(drop=True), boxes[order], labels[order]
    frame = frame.drop(columns=["scene_graph"])

    train = (frame["split"] == adjacency_split).to_numpy()
    if not train.any():
        raise DataError(f"no kept image in split {adjacency_split!r}: cannot build the anatomy adjacency")
    score = cooccurrence(labels[train])

    np.save(out / "boxes.npy", boxes.astype(np.float32))
    np.save(out / "labels.npy", labels.astype(np.uint8))
    np.save(out / "cooccurrence.npy", score)
    np.save(out / "adjacency.npy", binarise_adjacency(score, threshold))
    with open(out / "records.jsonl.tmp", "w") as fh:
        for r, row in enumerate(frame.itertuples(index=False)):
            anns = [{"id": f"{row.image_id}_{a}", "category_id": i, "bbox": [round(float(v), 2) for v in boxes[r, i]],
                     "attributes": labels[r, i].astype(int).tolist()} for i, a in enumerate(IMAGENOME_ANATOMIES)]
            fh.write(json.dumps({"image_id": row.image_id, "file_name": row.path, "annotations": anns}) + "\n")
    os.replace(out / "records.jsonl.tmp", out / "records.jsonl")
    pd.DataFrame(excluded, columns=["image_id", "reason"]).to_csv(out / "excluded.csv", index=False)
    meta = {"images": len(frame), "per_split": frame["split"].value_counts().to_dict(), "excluded": len(excluded),
            "label_policy": policy, "adjacency_split": adjacency_split, "adjacency_threshold": threshold,
            "adjacency_edges": int(binarise_adjacency(score, threshold).sum()),
            "mimic_root": str(mimic_root.resolve()), "imagenome_root": str(imagenome_root.resolve()),
            "anatomies": IMAGENOME_ANATOMIES, "findings": IMAGENOME_FINDINGS}
    frame.to_csv(out / "index.csv.tmp", index=False)
    os.replace(out / "index.csv.tmp", out / "index.csv")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))          # written last: marks completion
    shutil.rmtree(out / ".partial", ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------- reading it
class Prepared:
    """What ``prepare`` wrote, loaded: ``frame`` (index.csv), ``boxes`` (N,18,4), ``labels`` (N,18,9),
    ``adjacency`` (18,18)."""

    def __init__(self, directory: str | os.PathLike):
        d = Path(directory)
        missing = [f for f in FILES if not (d / f).exists()]
        if missing:
            raise DataError(f"{d} is not a (complete) CheXtriev prepared directory: missing {missing}; run "
                            "python -m chextriev.prepare --mimic MIMIC_ROOT --imagenome IMAGENOME_ROOT --out "
                            f"{d}")
        self.dir = d
        self.frame = pd.read_csv(d / "index.csv", dtype={"image_id": str, "patient_id": str, "study_id": str,
                                                        "view": str, "sex": str})
        self.frame["view"] = self.frame["view"].fillna("")
        self.boxes = np.load(d / "boxes.npy")
        self.labels = np.load(d / "labels.npy")
        self.adjacency = np.load(d / "adjacency.npy")
        self.meta = json.loads((d / "meta.json").read_text())
        if not (len(self.frame) == len(self.boxes) == len(self.labels)):
            raise DataError(f"{d}: index.csv ({len(self.frame)} rows), boxes.npy ({len(self.boxes)}) and "
                            f"labels.npy ({len(self.labels)}) disagree; re-run chextriev.prepare")

    def check_images(self, verify: bool = False, on_bad_image: str = "error") -> "Prepared":
        """Itself after a run's ``data.verify_images`` / ``data.on_bad_image``
        (``shared.data.images.check_frame_images``): "warn" leaves the undecodable images out of frame, boxes and
        labels alike."""
        frame = check_frame_images(self.frame, verify, on_bad_image)
        if len(frame) < len(self.frame):
            keep = self.frame["image_id"].isin(frame["image_id"]).to_numpy()
            self.frame, self.boxes, self.labels = frame, self.boxes[keep], self.labels[keep]
        return self

    def split(self, name: str) -> np.ndarray:
        idx = np.flatnonzero((self.frame["split"] == name).to_numpy())
        if idx.size == 0:
            raise DataError(f"{self.dir}: no image in split {name!r} (splits: "
                            f"{sorted(self.frame['split'].unique())})")
        return idx


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mimic", required=True, help="MIMIC-CXR-JPG 2.0.0 root (split/metadata CSVs, files/)")
    p.add_argument("--imagenome", required=True, help="Chest ImaGenome 1.0.0 root (silver/scene_graph/)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--label-policy", choices=POLICIES, default="yes_wins",
                   help="yes_wins (fixed, default) or last_wins (the original's behaviour)")
    p.add_argument("--no-check-files", action="store_true", help="do not require the JPEGs to exist")
    p.add_argument("--on-missing", choices=("error", "warn"), default="error",
                   help="an image file listed but absent: stop naming it (default), or warn and exclude it")
    p.add_argument("--verify", action="store_true",
                   help="decode every listed image once before parsing the graphs (threads, progress bar)")
    p.add_argument("--on-bad-image", choices=("error", "warn"), default="error",
                   help="an image that cannot be decoded: stop naming it (default), or warn and exclude it")
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args(argv)
    try:
        out = prepare(args.mimic, args.imagenome, args.out, args.label_policy, not args.no_check_files,
                      args.workers, on_missing=args.on_missing, verify=args.verify, on_bad_image=args.on_bad_image)
    except (DataError, FileNotFoundError) as err:
        print(f"python -m chextriev.prepare: error: {err}", file=sys.stderr)
        return 2
    meta = json.loads((out / "meta.json").read_text())
    print(f"kept {meta['images']} images {meta['per_split']}, excluded {meta['excluded']} (see "
          f"{out / 'excluded.csv'}); adjacency edges {meta['adjacency_edges']} -> {out}")
    return 0


if __name__ == "__main__":
    cli_exit("python -m chextriev.prepare", main)
