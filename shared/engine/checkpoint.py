"""Atomic checkpoint writes, ``weights_only=True`` loading, RNG state capture, strict weight loading."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .distributed import unwrap_model


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


class WeightsMismatchError(CheckpointError):
    """``load_model_weights(strict=True)`` found missing / unexpected / wrongly shaped keys."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]]):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, read-only folder); the previous file is untouched."""


def _write_failure(path: Path, err: BaseException) -> str:
    cause = err.strerror if isinstance(err, OSError) and err.strerror else f"{type(err).__name__}: {err}"
    try:
        free = f"{shutil.disk_usage(path.parent if path.parent.exists() else path.anchor).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return (f"cannot write checkpoint {path} ({cause}; {free} there): free disk space or move the runs root to "
            "a writable disk, then --resume the run (the previous checkpoint is intact)")


class LoadResult(NamedTuple):
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple, tuple]]   # (key, shape in checkpoint, shape in model)


# ------------------------------------------------------------------------------------------- save / load
def save_checkpoint(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace`` onto ``path``.

    A crash or exception at any point leaves either the old file or the new one, never a partial file, and
    removes the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointWriteError(_write_failure(path, err)) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, (OSError, RuntimeError)):  # a full disk surfaces as torch's "unexpected pos" RuntimeError
            raise CheckpointWriteError(_write_failure(path, err)) from err
        raise
    with suppress(OSError):  # make the rename durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_failure(path: Path, err: BaseException, trust_hint: str = "") -> str:
    """Why ``torch.load`` refused ``path``, in one line: pickled objects (``trust_hint`` says how to allow them)
    or a file that is not a complete PyTorch checkpoint (truncated download, another file type)."""
    text = str(err)
    if "Unsupported global" in text or "GLOBAL" in text:   # weights_only met a pickled class: a real checkpoint
        what = "holds pickled Python objects, which weights_only loading refuses"
        return f"cannot load checkpoint {path}: it {what}" + (f"; {trust_hint}" if trust_hint else "")
    first = text.splitlines()[0][:120] if text else ""
    return (f"cannot load checkpoint {path}: not a complete PyTorch checkpoint ({type(err).__name__}: {first}); "
            "the file is truncated (re-download or re-copy it) or of another type")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with one clear error naming the file when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; check the path (--weights / --run)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError ...
        raise CheckpointError(load_failure(path, err)) from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"cannot load checkpoint {path}: it holds a {type(obj).__name__}, not a state dict or "
                              "a checkpoint dict; give a checkpoint written by this project's train")
    return obj


# ---------------------------------------------------------------------------------------- model weights
_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _listing(title: str, items: list, limit: int = 25) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"  {title} ({len(items)}): {shown}{more}"


def load_model_weights(model: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool = True,
                       key_map: Mapping[str, str] | Callable[[str], str | None] | None = None) -> LoadResult:
    """Load ``state_dict`` into ``model`` (unwrapped from DDP), stripping ``module.``/``_orig_mod.`` prefixes.

    ``state_dict`` may also be a whole engine checkpoint (its ``"model"`` entry is used). ``key_map`` renames
    keys: a mapping ``{old_prefix: new_prefix}`` or a callable ``key -> new key | None`` (None drops the key).
    ``strict=True``: any missing, unexpected or wrongly shaped key raises :class:`WeightsMismatchError` listing
    them all. ``strict=False``: loads what fits and returns the lists in a :class:`LoadResult`.
    """
    if isinstance(state_dict.get("model"), Mapping) and "global_step" in state_dict:
        state_dict = state_dict["model"]
    target = unwrap_model(model)
    renamed: dict[str, Any] = {}
    for key, value in state_dict.items():
        key = _strip_prefixes(key)
        if callable(key_map):
            key = key_map(key)
            if key is None:
                continue
        elif key_map:
            for old, new in key_map.items():
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        renamed[key] = value
    own = target.state_dict()
    missing = sorted(k for k in own if k not in renamed)
    unexpected = sorted(k for k in renamed if k not in own)
    mismatched = sorted((k, tuple(renamed[k].shape), tuple(own[k].shape)) for k in own
                        if k in renamed and hasattr(renamed[k], "shape") and tuple(renamed[k].shape) != tuple(own[k].shape))
    if strict and (missing or unexpected or mismatched):
        lines = [f"state dict does not fit {type(target).__name__}:"]
        if missing:
            lines.append(_listing("missing keys (in model, not in checkpoint)", missing))
        if unexpected:
            lines.append(_listing("unexpected keys (in checkpoint, not in model)", unexpected))
        if mismatched:
            lines.append(_listing("shape mismatches (key, checkpoint, model)", mismatched))
        raise WeightsMismatchError("\n".join(lines), missing, unexpected, mismatched)
    bad = {k for k, _, _ in mismatched}
    target.load_state_dict({k: v for k, v in renamed.items() if k in own and k not in bad}, strict=False)
    return LoadResult(missing, unexpected, mismatched)


def weights_from_checkpoint(ckpt: Mapping[str, Any], prefer_ema: bool = True) -> Mapping[str, Any]:
    """The state dict to evaluate: the weights that won best.pt (``ckpt["best_source"]``: "ema"/"raw") when
    recorded, else the EMA weights when present (and ``prefer_ema``), else the raw model's."""
    source = ckpt.get("best_source")
    if source == "raw":
        return ckpt["model"]
    if source == "ema" and ckpt.get("ema") is not None:
        return ckpt["ema"]
    if prefer_ema and ckpt.get("ema") is not None:
        return ckpt["ema"]
    return ckpt["model"]


# ------------------------------------------------------------------------------------------ RNG states
def get_rng_state() -> dict:
    """torch / cuda / numpy / python RNG states as tensors, ints and lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# -------------------------------------------------------------------------------------- plain config
def to_plain(obj: Any) -> Any:
    """Dataclass / mapping / sequence / Path -> nested dict/list/str/number/bool/None (YAML- and weights_only-safe)."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)
