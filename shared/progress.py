"""Progress for long work: a tqdm bar on a terminal, a heartbeat line elsewhere.

A bar redrawn with carriage returns is useless in a pipe or a log file (``make reproduce-... > log``), and tqdm
disabled there leaves the log silent for minutes. So when the output is not a terminal, :class:`Progress` prints one
plain line every ``CXR_HEARTBEAT`` seconds (default 60; 0 = never) instead::

    epoch 1/30: 1200/2876 (42%) | 95.3 img/s | loss=0.1834 | ETA 4:41

    from shared.progress import Progress, progress
    for batch in progress(loader, desc="test"):            # evaluation / prepare loops: wrap the iterable
        ...
    bar = Progress(total=n, desc="epoch 1/30")             # training: update by hand, with images and the loss
    bar.update(1, items=batch_size); bar.set_postfix(loss=f"{loss:.4g}"); bar.close()
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator

from tqdm.auto import tqdm

HEARTBEAT_ENV = "CXR_HEARTBEAT"
DEFAULT_HEARTBEAT_S = 60.0


def heartbeat_seconds() -> float:
    """Seconds between heartbeat lines (``CXR_HEARTBEAT``; 0 turns them off)."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    try:
        return float(text) if text else DEFAULT_HEARTBEAT_S
    except ValueError:
        raise ValueError(f"{HEARTBEAT_ENV}={text!r} is not a number of seconds (e.g. 60; 0 = off)") from None


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """tqdm on a terminal; elsewhere a heartbeat line every :func:`heartbeat_seconds` (see the module docstring).

    ``items`` passed to :meth:`update` (images of the batch) give the items/s of the line; ``set_postfix`` values
    (the loss) are shown on both. ``disable=True`` shows nothing (e.g. a non-main DDP rank).
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 disable: bool = False, file=None, every: float | None = None):
        self.file = file or sys.stdout
        tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                        file=self.file, disable=disable or not tty)
        self.every = heartbeat_seconds() if every is None else every
        self.beating = not disable and not tty and self.every > 0
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.items, self.postfix = initial, 0, {}
        self._start_n = initial
        self._t0 = self._last = time.monotonic()

    def update(self, n: int = 1, items: int = 0) -> None:
        self.bar.update(n)
        self.n += n
        self.items += items
        if self.beating and time.monotonic() - self._last >= self.every:
            self.beat()

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.bar.set_postfix(**values, refresh=refresh)
        self.postfix.update(values)

    def line(self) -> str:
        """The heartbeat text: what, how far, how fast, the postfix values, time left."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        done = self.n - self._start_n
        where = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {where}" if self.desc else where]
        parts.append(f"{self.items / elapsed:.1f} img/s" if self.items else f"{done / elapsed:.2f} {self.unit}/s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        if self.total and done > 0:
            parts.append(f"ETA {_clock((self.total - self.n) * elapsed / done)}")
        return " | ".join(parts)

    def beat(self) -> None:
        print(self.line(), file=self.file, flush=True)
        self._last = time.monotonic()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, file=None, every: float | None = None) -> Iterator:
    """Wrap ``iterable`` (a DataLoader, a pool's results) in a :class:`Progress`; ``total`` defaults to its len()."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar = Progress(total=total, desc=desc, unit=unit, disable=disable, file=file, every=every)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
