"""A pre-decoded image cache: every image resized once and stored as raw uint8 in one memory-mapped file.

    from shared.data.cache import ImageCache
    ImageCache.build(frame, "data/nih_cache512", size=512, mode="square", workers=8)   # frame: image_id, path
    cache = ImageCache.open("data/nih_cache512")
    arr = cache.get("00000001_000.png")        # np.ndarray (512, 512) uint8, or None when not in the cache
    ds = ImageDataset(frame, labels, transform=..., cache=cache)   # decodes nothing from disk

Layout of a cache directory (written to a temporary name and renamed, so a directory that exists is complete):

    data.u8      all images' pixels back to back (row-major uint8)
    index.csv    image_id, offset, height, width, path (one row per image; offsets in bytes into data.u8)
    meta.json    {"version", "size", "mode", "count", "bytes"}

``mode="square"`` resizes every image to size x size (then every slot has the same shape: data.u8 is an
N x size x size array); ``mode="shorter"`` keeps the aspect ratio with the shorter side = size (never upscaling;
per-image offsets). Decoding uses :func:`shared.data.images.load_image` (8/16-bit PNG, RGBA, EXIF JPEG, DICOM),
resizing uses OpenCV INTER_AREA (downscale) or INTER_LINEAR (upscale).

Reading is safe from DataLoader worker processes: the memory map is opened lazily in each process (on the first
``get`` after a fork or unpickling), never shared across a fork, and it is read-only.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

__all__ = ["ImageCache", "ImageCaches", "find_caches", "resize_image", "MODES"]

MODES = ("square", "shorter")
VERSION = 1


def resize_image(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize a (H, W) uint8 image: ``square`` -> (size, size); ``shorter`` -> shorter side = size, aspect kept,
    never upscaled (an image already at or below ``size`` is returned unchanged)."""
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; use one of {MODES}")
    h, w = img.shape[:2]
    if mode == "square":
        th, tw = size, size
    else:
        s = size / min(h, w)
        if s >= 1.0:
            return img
        th, tw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    if (th, tw) == (h, w):
        return img
    interp = cv2.INTER_AREA if th < h and tw < w else cv2.INTER_LINEAR
    return cv2.resize(img, (tw, th), interpolation=interp)


def _load_resized(args) -> np.ndarray:
    path, size, mode = args
    from shared.data.images import load_image
    return np.ascontiguousarray(resize_image(load_image(path), size, mode))


def ordered_parallel_map(fn: Callable, items: Sequence, workers: int, window: int = 0) -> Iterator:
    """``map(fn, items)`` in order over ``workers`` processes, holding at most ``window`` results in flight
    (bounded memory, unlike ``Executor.map`` which submits everything at once). ``workers <= 1``: in-process."""
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    window = window or workers * 16
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futures = []
        it = iter(items)
        for x in it:
            futures.append(ex.submit(fn, x))
            if len(futures) >= window:
                break
        pos = 0
        for x in it:
            yield futures[pos].result()
            futures[pos] = None
            pos += 1
            futures.append(ex.submit(fn, x))
        for f in futures[pos:]:
            yield f.result()


class ImageCache:
    """Read side of a cache directory (see the module docstring). ``get(image_id)`` returns a fresh (H, W) uint8
    array, or ``None`` when the id is not in the cache; ``cache[image_id]`` raises ``KeyError`` instead."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.dir} is not an image cache: {meta_path} is missing "
                                    f"(build one with ImageCache.build or `prepare --cache`)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("version") != VERSION:
            raise ValueError(f"{meta_path}: cache version {self.meta.get('version')} is not {VERSION}; rebuild it")
        index = pd.read_csv(self.dir / "index.csv", dtype={"image_id": str, "path": str},
                            keep_default_na=False)
        self.image_ids = index["image_id"].to_numpy(dtype=np.str_)
        self._slot = {k: i for i, k in enumerate(index["image_id"].tolist())}
        self.offsets = index["offset"].to_numpy(np.int64)
        self.heights = index["height"].to_numpy(np.int64)
        self.widths = index["width"].to_numpy(np.int64)
        self.paths = index["path"].to_numpy(dtype=np.str_)
        self.size = int(self.meta["size"])
        self.mode = str(self.meta["mode"])
        expected = int(self.meta["bytes"])
        actual = (self.dir / "data.u8").stat().st_size
        if actual != expected:
            raise ValueError(f"{self.dir / 'data.u8'} has {actual} bytes, meta.json says {expected}: "
                             f"the cache is damaged; rebuild it")
        self._mm = None
        self._pid = None

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "ImageCache":
        return cls(directory)

    # ------------------------------------------------------------------------------------------------ reading
    def _data(self) -> np.memmap:
        if self._mm is None or self._pid != os.getpid():
            self._mm = np.memmap(self.dir / "data.u8", dtype=np.uint8, mode="r")
            self._pid = os.getpid()
        return self._mm

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mm"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._slot

    def slot(self, image_id) -> int | None:
        return self._slot.get(str(image_id))

    def get(self, image_id) -> np.ndarray | None:
        i = self._slot.get(str(image_id))
        if i is None:
            return None
        return self.get_slot(i)

    def get_slot(self, i: int) -> np.ndarray:
        o, h, w = int(self.offsets[i]), int(self.heights[i]), int(self.widths[i])
        return np.array(self._data()[o:o + h * w]).reshape(h, w)

    def __getitem__(self, image_id) -> np.ndarray:
        arr = self.get(image_id)
        if arr is None:
            raise KeyError(f"image {image_id!r} is not in the cache {self.dir}")
        return arr

    def as_array(self) -> np.ndarray:
        """The whole cache as an (N, size, size) read-only memmap (square caches only)."""
        if self.mode != "square":
            raise ValueError(f"{self.dir}: as_array needs a square cache, this one is {self.mode!r}")
        return self._data().reshape(len(self), self.size, self.size)

    def __repr__(self) -> str:
        return f"ImageCache({str(self.dir)!r}, n={len(self)}, size={self.size}, mode={self.mode!r})"

    # ------------------------------------------------------------------------------------------------ writing
    @classmethod
    def build(cls, paths_or_frame, out_dir: str | os.PathLike, size: int = 512, mode: str = "square",
              workers: int | None = None, progress: bool = True, overwrite: bool = False,
              if_different: str = "raise") -> "ImageCache":
        """Decode, resize and store every image; return the opened cache.

        ``paths_or_frame``: a DataFrame with ``image_id`` and ``path`` columns (the readers' index), a mapping
        {image_id: path}, or a sequence of paths (image_id = the file name). Duplicate ids raise. ``workers``:
        processes (default: all cores). An existing cache at ``out_dir`` whose parameters (size, mode, image ids
        and source paths) match is returned as is; ``overwrite=True`` always rebuilds. When they differ, or the
        existing cache is damaged, ``if_different="raise"`` (default) raises and ``"rebuild"`` rebuilds it.
        Written to ``out_dir.tmp-<pid>`` and renamed.
        """
        if mode not in MODES:
            raise ValueError(f"unknown cache mode {mode!r}; use one of {MODES}")
        if if_different not in ("raise", "rebuild"):
            raise ValueError(f"if_different must be 'raise' or 'rebuild', got {if_different!r}")
        ids, paths = _ids_and_paths(paths_or_frame)
        out = Path(out_dir)
        if (out / "meta.json").is_file() and not overwrite:
            try:
                cache = cls(out)
            except (OSError, ValueError, KeyError):
                if if_different == "raise":
                    raise
                cache = None
            if cache is not None:
                if (cache.size == size and cache.mode == mode and cache.image_ids.tolist() == ids
                        and cache.paths.tolist() == paths):
                    return cache
                if if_different == "raise":
                    raise ValueError(f"{out} already holds a different cache (size {cache.size}, mode "
                                     f"{cache.mode}, {len(cache)} images); pass overwrite=True or "
                                     f"if_different='rebuild', or choose another directory")
        workers = (os.cpu_count() or 1) if workers is None else int(workers)
        tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        offsets, heights, widths = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64), \
            np.zeros(len(ids), np.int64)
        offset = 0
        jobs = [(p, size, mode) for p in paths]
        results = ordered_parallel_map(_load_resized, jobs, workers)
        if progress:
            from shared.progress import progress as with_progress
            results = with_progress(results, total=len(jobs), desc=f"cache {out.name}", unit="img")
        with open(tmp / "data.u8", "wb") as f:
            for i, arr in enumerate(results):
                h, w = arr.shape
                offsets[i], heights[i], widths[i] = offset, h, w
                f.write(arr.tobytes())
                offset += h * w
        pd.DataFrame({"image_id": ids, "offset": offsets, "height": heights, "width": widths,
                      "path": [str(p) for p in paths]}).to_csv(tmp / "index.csv", index=False)
        (tmp / "meta.json").write_text(json.dumps({"version": VERSION, "size": int(size), "mode": mode,
                                                   "count": len(ids), "bytes": int(offset)}) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return cls(out)


class ImageCaches:
    """Several caches read as one (e.g. ADNet's ALL setting: one per dataset root); the first that holds an id wins."""

    def __init__(self, caches: Sequence[ImageCache]):
        self.caches = list(caches)

    def get(self, image_id) -> np.ndarray | None:
        for cache in self.caches:
            arr = cache.get(image_id)
            if arr is not None:
                return arr
        return None

    def __len__(self) -> int:
        return sum(len(c) for c in self.caches)


def find_caches(roots: Sequence[str | os.PathLike]) -> ImageCaches | None:
    """The caches ``prepare --cache`` left in ``<root>/cache`` of these dataset roots, or None when there are none.

    Datasets given the result read the images it holds without decoding and decode the rest from disk as usual."""
    found = [ImageCache.open(Path(r).expanduser() / "cache") for r in roots
             if (Path(r).expanduser() / "cache" / "meta.json").is_file()]
    return ImageCaches(found) if found else None


def _ids_and_paths(paths_or_frame) -> tuple[list[str], list[str]]:
    if isinstance(paths_or_frame, pd.DataFrame):
        missing = [c for c in ("image_id", "path") if c not in paths_or_frame.columns]
        if missing:
            raise ValueError(f"ImageCache.build: the frame lacks column(s) {missing}")
        ids = paths_or_frame["image_id"].astype(str).tolist()
        paths = paths_or_frame["path"].astype(str).tolist()
    elif isinstance(paths_or_frame, Mapping):
        ids = [str(k) for k in paths_or_frame]
        paths = [str(v) for v in paths_or_frame.values()]
    else:
        paths = [str(p) for p in paths_or_frame]
        ids = [Path(p).name for p in paths]
    seen = set()
    for k in ids:
        if k in seen:
            raise ValueError(f"ImageCache.build: image id {k!r} appears more than once")
        seen.add(k)
    return ids, paths
