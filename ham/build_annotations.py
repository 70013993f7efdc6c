"""Build HAM's annotation layout from NIH's CSVs.

    python -m ham.build_annotations --nih /data/nih --out /data/nih

Reads ROOT/Data_Entry_2017*.csv and ROOT/BBox_List_2017.csv (shared.data.nih) and writes
OUT/Annotations/Tags.json ({"<img>.png": [NIH "Finding Labels" names]}, "No Finding" kept as written),
OUT/Annotations/BBoxes.json ({"<img>.png": {"<Class>": [[x, y, w, h], ...]}}, 1024-px floats, NIH's names with
"Infiltrate" -> "Infiltration") and, when absent, OUT/ImageSets/ (HAM's shipped split files). With --out equal
to --nih the images stay where they are (root/images/ or the images_XXX/ folders); otherwise link or copy them.
Writes atomically (temp file + rename); prints the counts.
"""
from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
from pathlib import Path

from shared.cli import cli_exit
from shared.data import nih
from shared.data.splits import FILES


def _atomic_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def build(nih_root, out, imagesets: bool = True) -> dict:
    nih_root, out = Path(nih_root).expanduser(), Path(out).expanduser()
    frame = nih.read_index(nih_root, check_files=False)
    boxes = nih.read_boxes(nih_root)
    tags = {img: [t.strip() for t in str(s).split("|") if t.strip()]
            for img, s in zip(frame["image_id"], frame["finding_labels"])}
    bboxes: dict = {}
    for image_id, label, x, y, w, h in boxes[["image_id", "label", "x", "y", "w", "h"]].itertuples(index=False):
        bboxes.setdefault(image_id, {}).setdefault(label, []).append([float(x), float(y), float(w), float(h)])
    _atomic_json(out / "Annotations" / "Tags.json", tags)
    _atomic_json(out / "Annotations" / "BBoxes.json", bboxes)
    wrote_sets = False
    if imagesets and not (out / "ImageSets").is_dir():
        with tarfile.open(FILES / "ham" / "ImageSets.tar.gz", "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            tar.extractall(out, members=members, filter="data")
        wrote_sets = True
    counts = {"images": len(tags), "box_images": len(bboxes), "boxes": len(boxes), "imagesets_written": wrote_sets}
    return counts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="NIH CSVs -> HAM's Annotations/{Tags,BBoxes}.json (+ ImageSets/)")
    parser.add_argument("--nih", required=True, help="NIH root (Data_Entry_2017*.csv, BBox_List_2017.csv)")
    parser.add_argument("--out", required=True, help="HAM root to write Annotations/ (and ImageSets/) into")
    parser.add_argument("--no-imagesets", action="store_true", help="do not extract HAM's ImageSets/")
    args = parser.parse_args(argv)
    counts = build(args.nih, args.out, imagesets=not args.no_imagesets)
    print(f"wrote {args.out}/Annotations: {counts['images']} images in Tags.json, {counts['boxes']} boxes on "
          f"{counts['box_images']} images in BBoxes.json" + ("; ImageSets/ from HAM's shipped split files"
                                                               if counts["imagesets_written"] else ""))
    return counts


if __name__ == "__main__":
    cli_exit("python -m ham.build_annotations", main)
