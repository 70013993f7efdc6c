"""Decode any chest X-ray file into one thing: a 2-D ``uint8`` grayscale array.

``load_image(path) -> np.ndarray`` of shape (H, W), dtype uint8, whatever the file holds:

=====================  ==========================================================================================
file                   what happens
=====================  ==========================================================================================
8-bit grayscale PNG    returned as stored (no rescaling)
16-bit PNG / 32-bit    high-bit-depth data is rescaled to 0..255 by ``high_bit_depth``: ``"minmax"`` (default) maps
                       the image's own min..max to 0..255 — right for 12-bit data stored in 16-bit containers,
                       where a plain shift would give a near-black image; ``"shift"`` keeps the top 8 of 16 bits
                       (``>> 8``), the choice that preserves absolute intensities across images. Either way an
                       8-bit image stored as value * 257 (every value a multiple of 257) is returned exactly
RGB / palette          ITU-R 601-2 luminance (PIL's ``convert("L")``: L = 0.299 R + 0.587 G + 0.114 B)
RGBA / LA              alpha-composited over black (a transparent pixel carries no signal — the film background
                       of an X-ray is black), then luminance; an opaque alpha is therefore simply dropped
JPEG (and any PIL)     EXIF orientation applied first (``PIL.ImageOps.exif_transpose``)
DICOM (.dcm, or any    pydicom: modality LUT (rescale slope/intercept) -> VOI LUT (LUT sequence, else window) ->
file with the DICM     the VOI output range to 0..255 (so values beyond the window saturate and a window wider
preamble)              than the content leaves it grey, as a viewer shows it); without any VOI: the image's own
                       min..max to 0..255. MONOCHROME1 is inverted so that bright = dense
=====================  ==========================================================================================

Any failure raises :class:`ImageReadError` naming the file. ``to_rgb(array)`` turns the result into a 3-channel
``PIL.Image`` (the input every torchvision transform expects). ``verify_images(paths)`` decodes every file once in
a thread pool (progress bar) and reports every unreadable one at once; ``check_frame_images(frame, verify,
on_bad_image)`` applies a method's ``data.verify_images`` / ``data.on_bad_image`` keys to an index frame.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageReadError", "load_image", "to_rgb", "to_uint8", "verify_images", "check_frame_images",
           "DICOM_SUFFIXES"]

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


FIX_HINT = ("replace or re-copy the file (data.verify_images=true decodes every listed image before training, "
            "data.on_bad_image=warn skips undecodable ones)")
SKIP_HINT = "set data.on_bad_image=warn"   # how a user skips undecodable images (a method config key by default)


class ImageReadError(OSError):
    """An image file is missing, unreadable or in an unsupported format; the message names the file."""


def to_uint8(array: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Rescale a numeric array to uint8.

    ``mode="minmax"`` maps the array's own min..max to 0..255 (a constant array becomes all zeros);
    ``mode="shift"`` keeps the top 8 bits of a 16-bit range (``>> 8``, values clipped to 0..65535).
    A uint8 array is returned unchanged.
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if mode == "shift":
        return (np.clip(array, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    if mode != "minmax":
        raise ValueError(f"unknown rescaling mode {mode!r}; use 'minmax' or 'shift'")
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        array = np.where(finite, array, np.nan)
    lo, hi = np.nanmin(array), np.nanmax(array)
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    out = (np.nan_to_num(array, nan=lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _is_dicom(path: Path) -> bool:
    """By suffix; a file with another, non-raster suffix (or none) is sniffed for the DICM preamble."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in _RASTER_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an (H, W, 3) array of any numeric dtype, as float64."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _from_pil(img: Image.Image, high_bit_depth: str) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGBA" if ("transparency" in img.info or mode == "PA") else "RGB")
        mode = img.mode
    if mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "LA":
            gray, alpha = arr[..., 0], arr[..., 1]
        else:
            gray = _luminance(arr[..., :3])
            alpha = arr[..., 3] if mode == "RGBA" else None
        if alpha is not None:
            gray = gray * (alpha / 255.0)          # composite over black
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 65535 and not (arr % 257).any():
            return (arr // 257).astype(np.uint8)    # an 8-bit image stored as value * 257: exact
        return to_uint8(arr, high_bit_depth)
    if mode in ("RGB;16", "RGBA;16", "RGBX"):  # pragma: no cover - rare PIL modes
        return _from_pil(img.convert("RGB"), high_bit_depth)
    raise ValueError(f"unsupported PIL image mode {mode!r}")


def _from_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - pydicom is a dependency
        raise ImageReadError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from exc
    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    ds = pydicom.dcmread(str(path), force=True)
    arr = ds.pixel_array
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    if samples == 1 and arr.ndim == 3:
        raise ValueError(f"multi-frame DICOM ({arr.shape[0]} frames) is not a radiograph this loader supports")
    if samples == 3:
        photometric = str(getattr(ds, "PhotometricInterpretation", "RGB")).upper()
        if photometric.startswith("YBR"):
            try:
                from pydicom.pixels import convert_color_space
            except ImportError:  # pragma: no cover
                from pydicom.pixel_data_handlers.util import convert_color_space
            arr = convert_color_space(arr, photometric, "RGB")
        return to_uint8(_luminance(arr), "minmax")
    arr = apply_modality_lut(arr, ds)
    invert = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    bounds = _voi_output_range(ds, apply_voi_lut)
    if bounds is None:  # no window, no VOI LUT: the image's own range is all there is
        arr = np.asarray(arr, dtype=np.float64)
        if invert:
            arr = arr.max() - arr + arr.min()
        return to_uint8(arr, "minmax")
    # the VOI transform maps the window onto [lo, hi]: that range -- not the image's own -- is black..white, so a
    # window wider than the content keeps the content grey, as a DICOM viewer shows it
    lo, hi, is_lut = bounds
    if is_lut and np.asarray(arr).dtype.kind == "f":   # a LUT is indexed by stored values: integers
        arr = np.rint(arr).astype(np.int64)
    arr = np.asarray(apply_voi_lut(arr, ds, index=0), dtype=np.float64)
    out = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0
    if invert:
        out = 255.0 - out
    return np.rint(out).astype(np.uint8)


def _voi_output_range(ds, apply_voi_lut) -> tuple[float, float, bool] | None:
    """(lo, hi, is_lut): the output range of the dataset's first VOI transform (what pydicom's ``apply_voi_lut`` uses: the VOI
    LUT Sequence, else the window), found by pushing its whole input domain through it; None without one."""
    lut_items = ds.get("VOILUTSequence") or []
    if lut_items:
        desc = [int(v) for v in lut_items[0].LUTDescriptor]
        entries = desc[0] or 65536
        first = desc[1] - 65536 if desc[1] > 32767 and getattr(ds, "PixelRepresentation", 0) == 1 else desc[1]
        probe = np.arange(first, first + entries, dtype=np.int64)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        probe = np.array([-1e30, 1e30])
    else:
        return None
    with np.errstate(over="ignore"):   # a SIGMOID window at +-1e30 saturates through exp overflow: intended
        out = np.asarray(apply_voi_lut(probe, ds, index=0), dtype=np.float64)
    lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
    return (lo, hi, bool(lut_items)) if hi > lo else None


def load_image(path: str | os.PathLike, high_bit_depth: str = "minmax") -> np.ndarray:
    """Decode ``path`` to a (H, W) uint8 grayscale array (see the module docstring for every format's rule).

    Raises :class:`ImageReadError` naming the file when it is missing, truncated, or in an unsupported format.
    """
    path = Path(path)
    try:
        if _is_dicom(path):
            out = _from_dicom(path)
        else:
            with Image.open(path) as img:
                img.load()
                out = _from_pil(img, high_bit_depth)
    except ImageReadError:
        raise
    except (FileNotFoundError, IsADirectoryError):
        raise ImageReadError(f"image file not found: {path}; {FIX_HINT}") from None
    except Exception as exc:  # PIL/pydicom raise many types; always name the file
        raise ImageReadError(f"cannot decode image {path} ({type(exc).__name__}: {exc}); {FIX_HINT}") from exc
    if out.ndim != 2 or out.size == 0:
        raise ImageReadError(f"image {path} decoded to shape {out.shape}, expected a non-empty 2-D image")
    return np.ascontiguousarray(out)


def to_rgb(array: np.ndarray) -> Image.Image:
    """A (H, W) uint8 array (or an (H, W, 3) one) as a 3-channel ``PIL.Image`` in mode RGB."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = to_uint8(array)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.ndim == 3 and array.shape[2] == 3:
        return Image.fromarray(array, mode="RGB")
    if array.ndim == 3 and array.shape[2] == 1:
        return Image.fromarray(array[..., 0], mode="L").convert("RGB")
    raise ValueError(f"to_rgb expects (H, W) or (H, W, 3), got shape {array.shape}")


def _check_one(path: str) -> str | None:
    """None when ``path`` decodes (the same full decode training does), else why not."""
    try:
        load_image(path)
    except ImageReadError as exc:
        return str(exc.__cause__ or "").strip() or ("missing" if not os.path.isfile(path) else str(exc))
    return None


def verify_images(paths: Iterable[str | os.PathLike], workers: int = 8, on_error: str = "error",
                  progress: bool = True, skip_hint: str = SKIP_HINT) -> list[str]:
    """Decode every file once (:func:`load_image`) in a thread pool, with a progress bar.

    Returns the list of bad paths. ``on_error="error"`` raises one :class:`ImageReadError` listing the first
    bad files and their count, and ``skip_hint`` (how to skip them instead); ``on_error="warn"`` warns with the
    count and returns them.
    """
    import warnings

    from tqdm.auto import tqdm

    if on_error not in ("error", "warn"):
        raise ValueError(f"on_error must be 'error' or 'warn', got {on_error!r}")
    paths: Sequence[str] = [str(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(_check_one, paths), total=len(paths), desc="verify images", unit="img",
                            disable=not progress or None))
    bad = [(p, r) for p, r in zip(paths, results) if r is not None]
    if bad:
        listing = "; ".join(f"{p} ({r})" for p, r in bad[:5])
        msg = f"{len(bad)} of {len(paths)} image files cannot be decoded, e.g. {listing}"
        if on_error == "error":
            raise ImageReadError(f"{msg}; replace them, or {skip_hint} to skip them")
        warnings.warn(msg + "; skipped", stacklevel=2)
    return [p for p, _ in bad]


def check_frame_images(frame, verify: bool = False, on_bad_image: str = "error", workers: int = 8,
                       path_column: str = "path", skip_hint: str = SKIP_HINT):
    """An index frame after a method's ``data.verify_images`` / ``data.on_bad_image`` keys.

    Every listed image is decoded once before training when ``verify`` is true or ``on_bad_image`` is "warn"
    (skipping needs to know which files are bad): "error" stops naming the files, "warn" drops their rows with
    a warning that counts them (``attrs["skipped_bad_images"]``). Otherwise the frame is returned as is and a bad
    file stops training when it is read, naming it. ``skip_hint``: see :func:`verify_images`.
    """
    if on_bad_image not in ("error", "warn"):
        raise ValueError(f"data.on_bad_image must be 'error' or 'warn', got {on_bad_image!r}")
    if not verify and on_bad_image == "error":
        return frame
    bad = set(verify_images(frame[path_column], workers=workers, on_error=on_bad_image, skip_hint=skip_hint))
    if not bad:
        return frame
    out = frame.loc[~frame[path_column].astype(str).isin(bad)].reset_index(drop=True)
    out.attrs.update(frame.attrs)
    out.attrs["skipped_bad_images"] = len(bad)
    return out
