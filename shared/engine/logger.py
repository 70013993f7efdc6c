"""Run logging: log.txt (human), metrics.jsonl (one JSON object per event), optional TensorBoard and visdom."""
from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


_current_log: Path | None = None   # log.txt of the run this process opened last (for run_cli's error line)


def forget_run_log() -> None:
    """Start of a command: no run log yet."""
    global _current_log
    _current_log = None


def append_to_run_log(line: str) -> None:
    """Append ``line`` (time-stamped) to the log.txt of the run this process opened, if any (best effort: the
    error being reported may be that this disk is full or read-only)."""
    if _current_log is None:
        return
    try:
        with open(_current_log, "a", encoding="utf-8") as fh:
            fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}\n")
    except OSError:
        pass


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # NaN / inf -> null, so metrics.jsonl stays standard JSON
    return v


class RunLogger:
    """Writes only on the main process. ``info`` -> log.txt + console; ``metrics`` -> metrics.jsonl + log.txt
    (+ TensorBoard scalars / visdom lines when enabled)."""

    def __init__(self, run_dir: str | Path, main: bool = True, tensorboard: bool = False, visdom: bool = False,
                 visdom_env: str | None = None):
        self.run_dir = Path(run_dir)
        self.main = main
        self.tb = None
        self.vis = None
        self._vis_wins: dict[str, Any] = {}
        if not main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / "log.txt"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        global _current_log
        _current_log = self.log_path
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except Exception as err:  # tensorboard not installed
                self.warn(f"tensorboard requested but unavailable ({type(err).__name__}: {err}); "
                          "install the [tb] extra. Continuing without it.")
        if visdom:
            self.vis = self._connect_visdom(visdom_env or self.run_dir.name)

    # ----------------------------------------------------------------------------------------- sinks
    def _connect_visdom(self, env: str):
        try:
            import visdom  # optional dependency (extra [viz])
        except Exception as err:
            self.warn(f"visdom requested but not importable ({type(err).__name__}); continuing without it")
            return None
        import contextlib
        import io
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the client prints tracebacks when no server runs
                vis = visdom.Visdom(server=os.environ.get("VISDOM_SERVER", "http://localhost"),
                                    port=int(os.environ.get("VISDOM_PORT", "8097")), env=env,
                                    raise_exceptions=False, use_incoming_socket=False)
                connected = vis.check_connection(timeout_seconds=0)
            if not connected:
                self.warn("visdom: no server reachable; continuing without it")
                return None
            return vis
        except Exception as err:
            self.warn(f"visdom: cannot connect ({type(err).__name__}: {err}); continuing without it")
            return None

    def _visdom_plot(self, name: str, step: int, value: float) -> None:
        if self.vis is None:
            return
        try:
            import numpy as np
            x, y = np.array([step]), np.array([value])
            if name in self._vis_wins:
                self.vis.line(X=x, Y=y, win=self._vis_wins[name], update="append")
            else:
                self._vis_wins[name] = self.vis.line(X=x, Y=y, opts={"title": name})
        except Exception as err:  # never let a plotting sink kill training
            self.vis = None
            self.warn(f"visdom: disabled after an error ({type(err).__name__}: {err})")

    # ------------------------------------------------------------------------------------------- text
    def _write(self, line: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def info(self, msg: str, console: bool = True) -> None:
        if not self.main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._write(f"[{stamp}] {msg}")
        if console:
            tqdm.write(msg, file=sys.stdout)

    def warn(self, msg: str) -> None:
        if self.main:
            self.info(f"WARNING: {msg}", console=False)
        warnings.warn(msg, stacklevel=3)

    def error(self, msg: str) -> None:
        if self.main:
            self.info(f"ERROR: {msg}", console=False)
            tqdm.write(f"ERROR: {msg}", file=sys.stderr)

    # ---------------------------------------------------------------------------------------- metrics
    def metrics(self, split: str, step: int, epoch: int, values: dict[str, Any], console: bool = True) -> None:
        if not self.main:
            return
        record = {"step": int(step), "epoch": int(epoch), "split": split, "time": round(time.time(), 3)}
        record.update({k: _json_value(v) for k, v in values.items()})
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self.info(f"{split} step {step} epoch {epoch}: {shown}", console=console)
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                tag = k if "/" in k else f"{split}/{k}"
                if self.tb is not None:
                    self.tb.add_scalar(tag, float(v), int(step))
                self._visdom_plot(tag, int(step), float(v))

    def truncate_after(self, step: int) -> int:
        """Drop metrics.jsonl events with ``step > step`` (written after the checkpoint a run resumes from)."""
        if not self.main or not self.metrics_path.exists():
            return 0
        keep, dropped = [], 0
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                dropped += 1
                continue
            if int(rec.get("step", 0)) > step:
                dropped += 1
            else:
                keep.append(line)
        if dropped:
            tmp = self.metrics_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
            os.replace(tmp, self.metrics_path)
        return dropped

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
