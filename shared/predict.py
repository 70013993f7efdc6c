"""Predict on your own image: what the five ``<method>.predict`` command lines share.

    python -m adnet.predict cxr.png scan.dcm --run runs/adnet/demo/<ts> --out pred/ [--json]

Each method's ``predict.py`` provides a loader (its config + weights -> a :class:`Predictor`); this module does the
rest, once for all five:

* the command line (:func:`build_parser`): IMAGE..., ``--run RUN`` or ``--weights FILE`` (+ ``-cfg CONFIG`` when
  the file is not inside a run), ``--set``, ``--out DIR``, ``--json``, ``--device``;
* reading the image with the project's one decoder (:func:`shared.data.images.load_image`: PNG/JPEG of any bit
  depth, RGB(A), DICOM with its modality/VOI LUT and MONOCHROME1) -> a (H, W) uint8 array;
* input checks (:func:`check_image`), one line each: an image that looks already normalised or inverted, a lateral
  view where a frontal one is expected, an image far smaller than the model's input (warnings: the prediction still
  runs); a missing or unreadable file is an error for that file (the others still run, exit status 2);
* the result: a sorted findings table on the terminal, or the same as JSON (:func:`result_record`);
* the picture ``DIR/<image>_<method>.png``: panels side by side, every panel at the image's aspect ratio
  (:func:`write_panels`), with heat maps (:func:`heat_overlay`) and boxes drawn over the image.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from shared.data.images import DICOM_SUFFIXES, ImageReadError, load_image

__all__ = ["Evidence", "Predictor", "RunFiles", "build_parser", "resolve_run", "check_image", "crop_window",
           "normalise_map", "panel_size", "gray_rgb", "heat_overlay", "draw_box", "put_lines", "text_panel",
           "bar_panel", "write_panels", "result_record", "format_table", "run", "main"]

PANEL_SIDE = 512               # the longer side of each picture panel, in pixels
LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "XTABLE LATERAL", "LLD", "RLD"}
FEW_GREY_LEVELS = 16           # fewer distinct values than this: not a radiograph as acquired
SATURATED_FRACTION = 0.5       # more pixels than this at 0 or 255: clipped after a normalisation
LOW_CONTRAST = 20              # 1st..99th percentile spread below this (of 255): a normalised or blank image
SYMMETRY_FRONTAL = 0.4         # left-right correlation below this: probably not a frontal view (4 real frontal
#                                CXRs shipped with the tests give 0.72..0.83)
SMALL_FACTOR = 2               # an image whose shorter side is under input / SMALL_FACTOR is "far smaller"


@dataclass
class Evidence:
    """What a method says about one image.

    ``findings``: {name: probability in [0, 1]}; ``panels``: [(RGB uint8 picture at the image's size, title)];
    ``extra``: anything else for the JSON (branch probabilities, neighbours, nearest texts), JSON-serialisable."""
    findings: dict[str, float]
    panels: list[tuple[np.ndarray, str]]
    extra: dict = field(default_factory=dict)


@dataclass
class Predictor:
    """A loaded model: ``predict(gray (H, W) uint8) -> Evidence``; ``input_size`` the side its transform feeds the
    network; ``expects_frontal`` whether a lateral view is out of what it was trained on."""
    method: str
    predict: Callable[[np.ndarray], Evidence]
    input_size: int
    expects_frontal: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class RunFiles:
    """Where a model comes from: the config file, the weights file, and the run directory (None outside a run)."""
    config: Path
    weights: Path
    run_dir: Path | None


# --------------------------------------------------------------------------------------------- command line
def build_parser(method: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {method}.predict", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or DICOM files (any size/bit depth)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run directory (its config.yaml and best checkpoint)")
    source.add_argument("--weights", help="a checkpoint file: ours (RUN/checkpoints/*.pt) or the authors' release "
                                          "(then also -cfg CONFIG)")
    parser.add_argument("-cfg", "--config", help="the config the weights belong to (default: the run's config.yaml)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides")
    parser.add_argument("--out", default="predictions", help="where the pictures go (default: predictions/)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    return parser


def resolve_run(run: str | None, weights: str | None, config: str | None,
                checkpoint_in_run: Callable[[Path], Path] = lambda r: r / "checkpoints" / "best.pt") -> RunFiles:
    """--run RUN -> (RUN/config.yaml, ``checkpoint_in_run(RUN)``); --weights inside a run's ``checkpoints/`` ->
    that run's config; any other --weights file needs -cfg. Missing files are one error naming them."""
    if run:
        run_dir = Path(run)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--run {run_dir}: no config.yaml there (give a directory written by training)")
        ckpt = Path(weights) if weights else checkpoint_in_run(run_dir)
        if not ckpt.is_file() and not weights and (run_dir / "checkpoints" / "last.pt").is_file():
            ckpt = run_dir / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"--run {run_dir}: checkpoint {ckpt} not found (has training finished?)")
        return RunFiles(Path(config) if config else run_dir / "config.yaml", ckpt, run_dir)
    ckpt = Path(weights)
    if not ckpt.is_file():
        raise FileNotFoundError(f"--weights: checkpoint not found: {ckpt}")
    run_dir = next((p for p in ckpt.resolve().parents if (p / "config.yaml").is_file()), None) \
        if ckpt.resolve().parent.name == "checkpoints" else None
    if config:
        return RunFiles(Path(config), ckpt, run_dir)
    if run_dir is None:
        raise ValueError(f"--weights {ckpt} is not inside a training run: give -cfg CONFIG, the config of the "
                         "setting the weights were trained for")
    return RunFiles(run_dir / "config.yaml", ckpt, run_dir)


# --------------------------------------------------------------------------------------------- input checks
def _dicom_view(path: Path) -> str:
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return ""
    try:
        import pydicom
        ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the pixel read reports an unreadable file
        return ""
    return str(getattr(ds, "ViewPosition", "") or "").strip().upper()


def _region_mean(gray: np.ndarray, ys: tuple[float, float], xs: tuple[float, float]) -> float:
    h, w = gray.shape
    return float(gray[int(ys[0] * h):max(int(ys[1] * h), int(ys[0] * h) + 1),
                      int(xs[0] * w):max(int(xs[1] * w), int(xs[0] * w) + 1)].mean())


def check_image(gray: np.ndarray, path: str | Path, input_size: int, expects_frontal: bool = True) -> list[str]:
    """One warning line per problem the model cannot see for itself (empty list: none found).

    Heuristics, documented where they are thresholds: an already normalised image (few grey levels, most pixels
    saturated, or almost no contrast), an inverted one (the mediastinum darker than the lung fields: bones and
    heart are bright on a radiograph), a lateral view (DICOM ViewPosition, "lateral" in the name, or little
    left-right symmetry) where a frontal one is expected, and an image far smaller than the input."""
    path = Path(path)
    out = []
    g = gray.astype(np.float32)
    levels = len(np.unique(gray))
    saturated = float(((gray == 0) | (gray == 255)).mean())
    p1, p99 = np.percentile(g, [1, 99])
    if levels < FEW_GREY_LEVELS or saturated > SATURATED_FRACTION or p99 - p1 < LOW_CONTRAST:
        out.append(f"looks already normalised ({levels} grey levels, {saturated:.0%} of pixels at 0 or 255, "
                   f"1-99% range {p99 - p1:.0f} of 255): give the image as acquired, the model normalises itself")
    mediastinum = _region_mean(g, (0.25, 0.65), (0.45, 0.55))
    lungs = (_region_mean(g, (0.3, 0.6), (0.2, 0.35)) + _region_mean(g, (0.3, 0.6), (0.65, 0.8))) / 2
    if mediastinum < lungs:
        out.append(f"looks inverted (mediastinum {mediastinum:.0f} darker than the lung fields {lungs:.0f}): bones "
                   "should be bright; a DICOM's MONOCHROME1 is handled, re-export other files un-inverted")
    if expects_frontal:
        view = _dicom_view(path)
        symmetry = float(np.corrcoef(g.ravel(), g[:, ::-1].ravel())[0, 1]) if g.std() > 0 else 1.0
        if view in LATERAL_VIEWS or "lateral" in path.stem.lower():
            out.append(f"looks like a lateral view ({'DICOM ViewPosition ' + view if view else 'file name'}): the "
                       "model was trained on frontal (PA/AP) images")
        elif symmetry < SYMMETRY_FRONTAL:
            out.append(f"may be a lateral view (left-right correlation {symmetry:.2f}, frontal images give > "
                       f"{SYMMETRY_FRONTAL}): the model was trained on frontal (PA/AP) images")
    if min(gray.shape) * SMALL_FACTOR < input_size:
        out.append(f"is far smaller ({gray.shape[1]}x{gray.shape[0]} px) than the model's {input_size} px input: "
                   "it is upsampled, expect blurred evidence and less reliable scores")
    return out


# ------------------------------------------------------------------------------------------------ pictures
def panel_size(shape: tuple[int, int], side: int = PANEL_SIDE) -> tuple[int, int]:
    """(height, width) of a panel: the image's aspect ratio, longer side ``side``."""
    h, w = shape[:2]
    f = side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def gray_rgb(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The grey image resized to ``size`` (h, w), as RGB uint8."""
    small = cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.repeat(small[..., None], 3, axis=2)


def crop_window(shape: tuple[int, int], resize: int, crop: int, squash: bool) -> tuple[float, float, float, float]:
    """The part of an (H, W) image a test transform shows the network, as fractions (x0, y0, x1, y1): resize
    (``squash``: to resize x resize; else the shorter side to ``resize``, as torchvision's Resize(int)), then
    CenterCrop(crop)."""
    h, w = shape[:2]
    if squash:
        rh = rw = resize
    else:
        rh, rw = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
    fy, fx = min(1.0, crop / rh), min(1.0, crop / rw)
    return (0.5 - fx / 2, 0.5 - fy / 2, 0.5 + fx / 2, 0.5 + fy / 2)


def normalise_map(heat) -> np.ndarray:
    """A map min-max scaled to [0, 1] (a constant map -> zeros)."""
    heat = np.asarray(heat, np.float32)
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def heat_overlay(gray: np.ndarray, heat: np.ndarray, size: tuple[int, int], window=(0.0, 0.0, 1.0, 1.0),
                 alpha: float = 0.4) -> np.ndarray:
    """``heat`` (any h, w, values in [0, 1]) in JET colours over the image; it covers ``window`` (the fractions of
    the image the network saw, :func:`crop_window`), the rest of the image stays uncoloured."""
    base = gray_rgb(gray, size)
    x0, y0, x1, y1 = (round(window[0] * size[1]), round(window[1] * size[0]), round(window[2] * size[1]),
                      round(window[3] * size[0]))
    up = np.zeros(size, np.float32)
    up[y0:y1, x0:x1] = cv2.resize(np.clip(np.asarray(heat, np.float32), 0, 1), (x1 - x0, y1 - y0),
                                  interpolation=cv2.INTER_LINEAR)
    inside = np.zeros(size, bool)
    inside[y0:y1, x0:x1] = True
    colour = cv2.cvtColor(cv2.applyColorMap((up * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    mixed = np.where(inside[..., None], (1 - alpha) * base + alpha * colour, base)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def draw_box(picture: np.ndarray, box_xyxy: Sequence[float], colour=(0, 255, 0)) -> np.ndarray:
    """A rectangle given in fractions of the picture's width/height (x0, y0, x1, y1), drawn in place."""
    h, w = picture.shape[:2]
    x0, y0, x1, y1 = box_xyxy
    cv2.rectangle(picture, (int(x0 * w), int(y0 * h)), (int(x1 * w) - 1, int(y1 * h) - 1), colour,
                  max(1, round(max(h, w) / 256)))
    return picture


def put_lines(picture: np.ndarray, lines: Sequence[str], top: int = 0, scale: float | None = None) -> None:
    """White text on a dark band, from ``top``, in place (cv2's Hershey font: ASCII)."""
    h, w = picture.shape[:2]
    scale = scale or max(0.35, w / 900)
    step = int(32 * scale) + 4                       # a line's height, descenders included
    for i, line in enumerate(lines):
        y = top + (i + 1) * step
        if y > h - 2:
            break
        text = line.encode("ascii", "replace").decode()
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(picture, (0, y - th - 3), (min(w, tw + 8), y + base), (0, 0, 0), -1)
        cv2.putText(picture, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def text_panel(lines: Sequence[str], size: tuple[int, int], width_chars: int = 48) -> np.ndarray:
    """A black panel of ``size`` holding ``lines`` (wrapped)."""
    picture = np.zeros((*size, 3), np.uint8)
    wrapped = [part for line in lines for part in (textwrap.wrap(line, width_chars) or [""])]
    put_lines(picture, wrapped, scale=max(0.35, size[1] / (width_chars * 19)))
    return picture


def bar_panel(scores: Sequence[tuple[str, float]], size: tuple[int, int], title_lines: int = 1) -> np.ndarray:
    """A black panel of ``size``: one horizontal bar per (name, value in [0, 1]), in the given order, below
    ``title_lines`` lines left free for the panel title."""
    h, w = size
    picture = np.zeros((h, w, 3), np.uint8)
    scale = max(0.35, w / 900)
    step = int(32 * scale) + 4
    top = (title_lines + 1) * step
    rows = max(1, min(len(scores), (h - top) // step))
    for i, (name, value) in enumerate(scores[:rows]):
        y = top + i * step
        cv2.rectangle(picture, (0, y - step + 6), (int(np.clip(value, 0, 1) * (w - 1)), y + 2), (40, 90, 200), -1)
        cv2.putText(picture, f"{value:.3f}  {name}".encode("ascii", "replace").decode(), (4, y),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def write_panels(path: Path, panels: Sequence[tuple[np.ndarray, str]]) -> Path:
    """Panels (all of one size) side by side, each titled inside its top-left corner -> PNG at ``path``."""
    size = panels[0][0].shape[:2]
    row = []
    for picture, title in panels:
        if picture.shape[:2] != size:
            raise ValueError(f"panel {title!r} is {picture.shape[:2]}, the first one {size}: give equal sizes")
        picture = picture.copy()
        put_lines(picture, [title])
        row.append(picture)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(row, axis=1), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


# ------------------------------------------------------------------------------------------------ results
def result_record(image: str | Path, method: str, evidence: Evidence, warnings: list[str],
                  picture: Path | None) -> dict:
    """The JSON record of one image: findings sorted by probability (highest first)."""
    ranked = sorted(evidence.findings.items(), key=lambda kv: -kv[1])
    return {"image": str(image), "method": method,
            "findings": [{"finding": name, "probability": round(float(p), 6)} for name, p in ranked],
            "warnings": warnings, "picture": str(picture) if picture else None,
            "panels": len(evidence.panels), **evidence.extra}


def format_table(record: dict) -> str:
    """The terminal view of a record: one row per finding (highest first); an extra entry that is a {finding:
    probability} dict (AG-CNN's global / local branches) becomes a column, any other one a line below."""
    names = [f["finding"] for f in record["findings"]]
    columns = [k for k, v in record.items() if isinstance(v, dict) and set(v) == set(names)]
    width = max([len(n) for n in names] + [7])
    lines = [f"{record['image']}  ({record['method']})",
             f"  {'finding':<{width}}  probability" + "".join(f"  {c:>11}" for c in columns)]
    lines += [f"  {f['finding']:<{width}}  {f['probability']:11.3f}"
              + "".join(f"  {record[c][f['finding']]:11.3f}" for c in columns) for f in record["findings"]]
    for key, value in record.items():
        if key in ("image", "method", "findings", "warnings", "picture", "panels", *columns):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):   # neighbours, texts
            lines.append(f"  {key}:")
            lines += ["    " + "  ".join(f"{k}={v}" for k, v in item.items() if k != "path") for item in value]
        else:
            lines.append(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}")
    if record["picture"]:
        lines.append(f"  picture: {record['picture']}")
    return "\n".join(lines)


def run(predictor: Predictor, images: Sequence[str], out: str | Path, as_json: bool = False,
        echo: Callable[[str], None] = print) -> tuple[list[dict], int]:
    """Predict every image; (records, exit status: 0, or 2 when an image could not be read). Pictures are named
    by absolute path: script mode (``cd adnet && python predict.py``) writes under the repository root, so a
    relative name would not open from the folder it was printed in."""
    out = Path(out).resolve()
    records, status = [], 0
    for note in predictor.notes:
        print(f"{predictor.method}.predict: note: {note}", file=sys.stderr)
    for image in images:
        try:
            gray = load_image(image)
        except ImageReadError as err:
            print(f"{predictor.method}.predict: error: {err}", file=sys.stderr)
            status = 2
            continue
        warnings = check_image(gray, image, predictor.input_size, predictor.expects_frontal)
        for line in warnings:
            print(f"{predictor.method}.predict: warning: {image} {line}", file=sys.stderr)
        evidence = predictor.predict(gray)
        picture = write_panels(out / f"{Path(image).stem}_{predictor.method}.png", evidence.panels) \
            if evidence.panels else None
        record = result_record(image, predictor.method, evidence, warnings, picture)
        records.append(record)
        if not as_json:
            echo(format_table(record))
    if as_json:
        echo(json.dumps(records, indent=2))
    return records, status


def main(method: str, description: str, load: Callable[[argparse.Namespace], Predictor], argv=None,
         extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The whole CLI: parse, ``load(args)`` the predictor, :func:`run`. User errors -> one line, status 2."""
    from shared.cli import run_cli

    parser = build_parser(method, description)
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    return run_cli(f"python -m {method}.predict",
                   lambda: run(load(args), args.images, args.out, args.json)[1])
