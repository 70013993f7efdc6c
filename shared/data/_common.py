"""Private helpers the dataset readers share: locating files, checking columns, the missing-file policy."""
from __future__ import annotations

import gzip
import io
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

ON_MISSING = ("error", "warn")


class DataError(ValueError):
    """Bad dataset input (missing file or column, unknown label, bad value); the message names the culprit."""


def find_file(root: Path, names: Sequence[str], what: str, required: bool = True) -> Path | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists under ``root``."""
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    if required:
        tried = ", ".join(names)
        raise DataError(f"{what}: none of [{tried}] (optionally .gz) found in {root}")
    return None


def read_text_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file (gzip when the name ends in .gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.strip() for line in fh.read().splitlines() if line.strip()]


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except Exception as exc:  # name the file whatever pandas says
        raise DataError(f"cannot read CSV {path}: {type(exc).__name__}: {exc}") from exc


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: object) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")


def scan_files(directory: Path, suffixes: tuple[str, ...] | None = None) -> dict[str, str]:
    """{file name: absolute path} of one directory, by a single ``os.scandir`` (no per-file stat)."""
    out: dict[str, str] = {}
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if suffixes is None or entry.name.lower().endswith(suffixes):
                    out[entry.name] = os.path.join(os.path.abspath(directory), entry.name)
    except FileNotFoundError:
        pass
    return out


def walk_files(directory: Path, suffixes: tuple[str, ...]) -> set[str]:
    """Every file under ``directory`` whose name ends in one of ``suffixes``, as absolute paths (one listing per
    directory, never one stat per file)."""
    found: set[str] = set()
    base = os.path.abspath(directory)
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if name.lower().endswith(suffixes):
                found.add(os.path.join(dirpath, name))
    return found


def apply_missing(frame: pd.DataFrame, present: np.ndarray, on_missing: str, what: str,
                  fix: str = "set data.on_missing=warn") -> pd.DataFrame:
    """Raise (naming the first missing files and ``fix``, how to skip them) or warn-and-skip the rows whose file
    is absent (``attrs["skipped_missing"]`` counts them, ``attrs["missing_ids"]`` names them)."""
    check_on_missing(on_missing)
    present = np.asarray(present, dtype=bool)
    n_missing = int((~present).sum())
    if n_missing == 0:
        return frame
    examples = frame.loc[~present, "path"].head(5).tolist()
    msg = f"{what}: {n_missing} of {len(frame)} image files missing, e.g. {examples}"
    if on_missing == "error":
        raise FileNotFoundError(f"{msg}; restore them, or {fix} to skip them with a warning")
    warnings.warn(msg + f"; skipped {n_missing} rows", stacklevel=3)
    out = frame.loc[present].reset_index(drop=True)
    out.attrs.update(frame.attrs)
    out.attrs["skipped_missing"] = n_missing
    if "image_id" in frame:
        out.attrs["missing_ids"] = frame.loc[~present, "image_id"].tolist()
    return out


def check_label_values(frame: pd.DataFrame, columns: Sequence[str], allowed: Sequence[float], source: object,
                       row_offset: int = 2) -> None:
    """Every value of ``columns`` is NaN or in ``allowed``; otherwise name the first bad row and column.

    ``row_offset`` converts a 0-based frame position to the file's line number (header = line 1)."""
    allowed_arr = np.asarray(allowed, dtype=np.float64)
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        raw_nan = frame[col].isna().to_numpy()
        bad = (~np.isnan(values) & ~np.isin(values, allowed_arr)) | (np.isnan(values) & ~raw_nan)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            value = frame[col].iloc[pos]
            value = value.item() if hasattr(value, "item") else value
            raise DataError(f"{source}: line {pos + row_offset}, column {col!r}: value {value!r} "
                            f"is not one of {list(allowed)} or blank ({int(bad.sum())} bad values in this column)")


def apply_policy(values: np.ndarray, uncertain: str, blank: str, label: str) -> np.ndarray:
    """Map CheXpert-style values {1, 0, -1, NaN} to float32 with the given policies.

    uncertain (-1): "ones" (U-Ones), "zeros" (U-Zeros), "ignore" (NaN, to be masked), "keep" (stay -1).
    blank (NaN): "zeros" (the usual), "keep" (NaN, to be masked).
    """
    out = values.astype(np.float32).copy()
    unc = out == -1
    if uncertain == "ones":
        out[unc] = 1.0
    elif uncertain == "zeros":
        out[unc] = 0.0
    elif uncertain == "ignore":
        out[unc] = np.nan
    elif uncertain != "keep":
        raise ValueError(f"uncertain policy for {label!r} must be 'ones', 'zeros', 'ignore' or 'keep', "
                         f"got {uncertain!r}")
    if blank == "zeros":
        out[np.isnan(values)] = 0.0
    elif blank != "keep":
        raise ValueError(f"blank policy must be 'zeros' or 'keep', got {blank!r}")
    return out


def resolve_uncertain(uncertain: str | Mapping[str, str], labels: Sequence[str], default: str,
                      known: Sequence[str]) -> dict[str, str]:
    """One policy per label from a single policy or a {label: policy} mapping (others get ``default``)."""
    if isinstance(uncertain, str):
        return {lab: uncertain for lab in labels}
    unknown = [k for k in uncertain if k not in known]
    if unknown:
        raise DataError(f"uncertain policy names unknown label(s) {unknown}; known: {list(known)}")
    return {lab: uncertain.get(lab, default) for lab in labels}


def label_policies(dataset: str, labels: Sequence[str], known: Sequence[str], uncertain: str | Mapping[str, str],
                   uncertain_default: str, blank: str) -> dict[str, str]:
    """Check the requested label names and return one uncertain-policy per label, every policy name validated
    before any file is read (a typo fails at once, naming the label)."""
    unknown = [lab for lab in labels if lab not in known]
    if unknown:
        raise DataError(f"{dataset}: unknown label(s) {unknown}; known: {list(known)}")
    policies = resolve_uncertain(uncertain, labels, uncertain_default, known)
    for lab, pol in policies.items():
        apply_policy(np.zeros(0), pol, blank, lab)
    return policies


def open_maybe_gz(path: Path) -> io.IOBase:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")
