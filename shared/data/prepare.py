"""Prepare a dataset for fast training: resize every image once, in parallel, into the SAME on-disk layout.

    python -m shared.data.prepare --dataset nih --root /data/nih --out /data/nih512 --size 512
    python -m shared.data.prepare --dataset mimic --root /data/mimic-cxr-jpg --out /data/mimic512 \\
        --size 512 --mode shorter --cache --workers 16

What it does:
- every image under ``--root`` (.png, .jpg, .jpeg) is decoded with :func:`shared.data.images.load_image` (8/16-bit,
  RGBA, EXIF orientation, all handled), resized (``--mode square``: size x size; ``--mode shorter``: shorter
  side = size, aspect kept, never upscaled) and written as clean 8-bit grayscale to the same relative path under
  ``--out`` (same extension: PNG stays PNG, JPEG is written at quality 95);
- every other file (CSV, TXT lists, reports, JSON scene graphs, XML; .gz too) is copied unchanged, so the same
  reader reads ``--out`` exactly as it reads ``--root``. Coordinates in copied files (NIH BBox_List, ImaGenome
  scene graphs) still refer to the ORIGINAL images: ``--out/prepare_sizes.csv`` lists every image's original and
  new height/width to scale them;
- resumable: an output that exists with the expected size is skipped, every write goes to a temporary file that
  is renamed, so a killed run leaves no half-written image; a second run does no work;
- parallel over ``--workers`` processes (default: all cores), with a progress bar;
- ``--cache`` also builds a pre-decoded :class:`shared.data.cache.ImageCache` of the prepared images at
  ``--cache-dir`` (default ``--out/cache``), keyed by the reader's ``image_id`` (the dataset reader indexes
  ``--out``; if it cannot, the relative path is the key and a warning says so). The cache is rebuilt when images
  were rewritten or when it was built with another size, mode or image list; otherwise it is reused.

``prepare(dataset, root, out, size, ...) -> dict`` is the same as a function; it returns counts
{"images", "written", "skipped", "copied", "cache"}.

``--verify`` (no ``--out``) only checks: every image the dataset's reader lists (every image file under ``--root``
when the reader cannot index it) is decoded once, in parallel with a progress bar; undecodable files end in one
error line listing them (exit status 2), else it prints how many decode. ``verify(dataset, root)`` as a function.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from shared.cli import cli_exit
from shared.data.cache import MODES, ImageCache, ordered_parallel_map, resize_image

__all__ = ["prepare", "verify", "DATASETS", "IMAGE_SUFFIXES"]

DATASETS = ("nih", "chexpert", "mimic", "imagenome", "openi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SIZES_FILE = "prepare_sizes.csv"
_SKIP_NAMES = {SIZES_FILE, "prepare.json"}


def _walk(root: Path, skip: Path | None):
    """Yield relative paths of every file under root (sorted, deterministic), never descending into ``skip``."""
    stack = [root]
    out = []
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as exc:
            raise OSError(f"cannot list {d}: {exc}") from exc
        for e in entries:
            p = Path(e.path)
            if e.is_dir(follow_symlinks=True):
                if skip is not None and p.resolve() == skip:
                    continue
                stack.append(p)
            elif e.is_file(follow_symlinks=True):
                out.append(p.relative_to(root))
    return sorted(out)


def _expected_shape(h, w, size, mode):
    if mode == "square":
        return size, size
    s = size / min(h, w)
    if s >= 1.0:
        return h, w
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def _valid_output(dst: Path, size: int, mode: str) -> tuple[int, int] | None:
    """(h, w) of an existing prepared image that fits the request, else None (header read only)."""
    try:
        with Image.open(dst) as im:
            w, h = im.size
            if im.mode != "L":
                return None
    except (OSError, ValueError):
        return None
    if mode == "square":
        return (h, w) if (h, w) == (size, size) else None
    return (h, w) if min(h, w) <= size else None


def _source_shape(src: Path) -> tuple[int, int] | None:
    """(h, w) of a source image as load_image returns it (EXIF rotation applied), from its header only."""
    try:
        with Image.open(src) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1) if src.suffix.lower() in (".jpg", ".jpeg") else 1
    except (OSError, ValueError):
        return None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _prepare_one(args):
    """Worker: (src, dst, size, mode) -> (rel, orig_h, orig_w, h, w, wrote)."""
    src, dst, size, mode, rel = args
    dst = Path(dst)
    from shared.data.images import load_image
    img = load_image(src)
    oh, ow = img.shape
    out = resize_image(img, size, mode)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ext = dst.suffix.lower()
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 95]
    ok, buf = cv2.imencode(".png" if ext == ".png" else ".jpg", np.ascontiguousarray(out), params)
    if not ok:
        raise OSError(f"could not encode {dst}")
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, dst)
    return rel, oh, ow, out.shape[0], out.shape[1], True


def _copy_if_changed(src: Path, dst: Path) -> bool:
    try:
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime):
            return False
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def _index_frame(dataset: str, root: Path):
    """The reader's index of the prepared root (all splits), or None when no reader can read it."""
    import importlib
    try:
        mod = importlib.import_module(f"shared.data.{dataset}")
    except ImportError:
        return None
    try:
        if dataset == "chexpert":
            return mod.read_index(root, "all")
        if dataset == "openi":
            return mod.read_reports(root)
        return mod.read_index(root)
    except Exception as exc:   # the reader explains what it could not read; the cache falls back to paths
        warnings.warn(f"prepare --cache: the {dataset} reader could not index {root} ({exc}); the cache is keyed "
                      f"by relative path instead", stacklevel=2)
        return None


def prepare(dataset: str, root, out, size: int = 512, mode: str = "shorter", cache: bool = False,
            cache_dir=None, workers: int | None = None, progress: bool = True) -> dict:
    """Resize ``root``'s images into ``out`` in the same layout (see the module docstring); return counts."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {DATASETS}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    root, out = Path(root).expanduser().resolve(), Path(out).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if out == root:
        raise ValueError(f"--out must differ from --root ({root}): prepare never overwrites the originals")
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    skip = out if out.is_relative_to(root) else None
    files = _walk(root, skip)
    images = [r for r in files if r.suffix.lower() in IMAGE_SUFFIXES]
    others = [r for r in files if r.suffix.lower() not in IMAGE_SUFFIXES and r.name not in _SKIP_NAMES
              and not r.name.startswith(".")]
    if not images:
        raise FileNotFoundError(f"no images (.png/.jpg/.jpeg) under {root}")
    out.mkdir(parents=True, exist_ok=True)
    copied = sum(_copy_if_changed(root / r, out / r) for r in others)

    # which outputs still need work (existing, valid ones are skipped; sizes come from the previous run's table)
    sizes_path = out / SIZES_FILE
    known = {}
    if sizes_path.is_file():
        import pandas as pd
        prev = pd.read_csv(sizes_path, dtype={"path": str}, keep_default_na=False)
        known = {r.path: (r.orig_height, r.orig_width) for r in prev.itertuples()}
    todo, rows = [], {}
    for r in images:
        key = r.as_posix()
        got = _valid_output(out / r, size, mode) if (out / r).is_file() else None
        orig = (known.get(key) or _source_shape(root / r)) if got is not None else None
        if got is not None and orig is not None and got == _expected_shape(*orig, size, mode):
            rows[key] = (*orig, *got)
        else:
            todo.append((str(root / r), str(out / r), size, mode, key))
    results = ordered_parallel_map(_prepare_one, todo, workers)
    if progress and todo:
        from shared.progress import progress as with_progress
        results = with_progress(results, total=len(todo), desc=f"prepare {dataset} {size}px", unit="img")
    written = 0
    try:
        for rel, oh, ow, h, w, _ in results:
            rows[rel] = (oh, ow, h, w)
            written += 1
    finally:   # a killed run keeps the size table of what it finished, so the next run resumes
        if written or not sizes_path.is_file():
            lines = ["path,orig_height,orig_width,height,width"] + [
                f"{k},{v[0]},{v[1]},{v[2]},{v[3]}" for k, v in sorted(rows.items())]
            tmp = sizes_path.with_name(sizes_path.name + ".tmp")
            tmp.write_text("\n".join(lines) + "\n")
            os.replace(tmp, sizes_path)
    meta = {"dataset": dataset, "root": str(root), "size": int(size), "mode": mode}
    meta_path = out / "prepare.json"
    if not meta_path.is_file() or json.loads(meta_path.read_text()) != meta:
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    counts = {"images": len(images), "written": written, "skipped": len(images) - written, "copied": copied,
              "cache": None}
    if cache:
        cdir = Path(cache_dir) if cache_dir is not None else out / "cache"
        frame = _index_frame(dataset, out)
        if frame is None:
            src = {r.as_posix(): str(out / r) for r in images}
        else:
            src = frame[["image_id", "path"]]
        # rewritten images make the cache stale; so does any other size/mode/image list than it was built with
        # (a mode or size change can leave every prepared image valid, so nothing is rewritten)
        c = ImageCache.build(src, cdir, size=size, mode=mode, workers=workers, progress=progress,
                             overwrite=written > 0, if_different="rebuild")
        counts["cache"] = str(c.dir)
    return counts


def verify(dataset: str, root, workers: int | None = None, progress: bool = True) -> int:
    """Decode every image of ``root`` once (see ``--verify``); returns how many; raises ImageReadError listing the
    undecodable ones."""
    from shared.data.images import verify_images
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    frame = _index_frame(dataset, root)
    paths = list(frame["path"]) if frame is not None and "path" in frame else [
        str(root / r) for r in _walk(root, None) if r.suffix.lower() in IMAGE_SUFFIXES]
    verify_images(paths, workers=(os.cpu_count() or 1) if workers is None else workers, progress=progress)
    return len(paths)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m shared.data.prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, help="the dataset as downloaded (never modified)")
    p.add_argument("--out", default=None, help="where the prepared copy goes (same layout; required unless --verify)")
    p.add_argument("--verify", action="store_true",
                   help="only decode every listed image once and report the undecodable ones (no --out)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--mode", choices=MODES, default="shorter",
                   help="shorter: shorter side = size, aspect kept (default); square: size x size")
    p.add_argument("--cache", action="store_true", help="also build a pre-decoded uint8 ImageCache")
    p.add_argument("--cache-dir", default=None, help="default: OUT/cache")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.verify:
        print(f"all {verify(a.dataset, a.root, a.workers, progress=not a.no_progress)} images of {a.root} decode")
        return
    if a.out is None:
        p.error("--out is required (or --verify)")
    counts = prepare(a.dataset, a.root, a.out, a.size, a.mode, a.cache, a.cache_dir, a.workers,
                     progress=not a.no_progress)
    print(f"prepared {counts['images']} images into {a.out}: {counts['written']} written, {counts['skipped']} "
          f"already done, {counts['copied']} metadata files copied" +
          (f"; cache at {counts['cache']}" if counts["cache"] else ""))


if __name__ == "__main__":
    cli_exit("python -m shared.data.prepare", main)
