"""kill -9 a CPU training run mid-epoch, resume it, and get exactly the uninterrupted run's weights and metrics."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "engine_scripts" / "train_tiny.py"


pytestmark = pytest.mark.usefixtures("restore_torch_flags")

ARGS = ["--epochs", "2", "--samples", "64", "--batch", "8", "--ckpt-every", "3", "--ema", "0.9", "--val-every", "5"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(SCRIPT.parents[3]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(args, **kw):
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=_env(), capture_output=True, text=True,
                          timeout=120, **kw)


def _events(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _assert_same_run(a, b):
    for name in ("last.pt", "best.pt"):
        ca = torch.load(Path(a) / "checkpoints" / name, weights_only=True)
        cb = torch.load(Path(b) / "checkpoints" / name, weights_only=True)
        assert ca["global_step"] == cb["global_step"] and ca["best_metric"] == cb["best_metric"]
        for part in ("model", "ema"):
            for k in ca[part]:
                assert torch.equal(ca[part][k], cb[part][k]), (name, part, k)
        assert ca["metrics"] == cb["metrics"]
    assert _events(a) == _events(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in-process, no workers)."""
    spec = importlib.util.spec_from_file_location("engine_train_tiny_ref", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    out = mod.main([str(run_dir), *ARGS])
    assert out["global_step"] == 16
    return run_dir


def test_self_kill9_mid_epoch_then_resume_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    # micro-batch 11 = epoch 1, batch 2: last.pt was written at step 9 (epoch 1, batch 1); 2 workers this time
    killed = _run([str(run_dir), *ARGS, "--workers", "2", "--kill-at-batch", "11"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ck = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["global_step"], ck["epoch"], ck["step_in_epoch"]) == (9, 1, 1)
    resumed = _run([str(run_dir), *ARGS, "--workers", "2"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in (run_dir / "log.txt").read_text()
    _assert_same_run(reference, run_dir)


def test_external_kill9_after_a_checkpoint_then_resume_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir), *ARGS, "--sleep", "0.05"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 90
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.08)                                 # land between checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert last.exists()
    if proc.returncode == -signal.SIGKILL:
        assert torch.load(last, weights_only=True)["global_step"] < 16
    (last.parent / ".last.pt.interrupted.tmp").write_bytes(b"half a checkpoint")   # as if killed mid-save
    resumed = _run([str(run_dir), *ARGS])
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]   # stale temp file removed
    _assert_same_run(reference, run_dir)


def _tiny():
    spec = importlib.util.spec_from_file_location("engine_train_tiny_files", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_any_start_removes_orphaned_temp_checkpoints_and_resume_overrides_are_recorded_beside(tmp_path):
    """A kill during a save leaves checkpoints/.last.pt.*.tmp: the next start in that directory removes it, a
    resume or not. Resuming with other settings keeps config.yaml (what trained) and logs the change beside it."""
    tiny = _tiny()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = run / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    tiny.main([str(run), "--epochs", "1", "--samples", "16"])             # a fresh start in that directory
    assert not stale.exists()
    original = (run / "config.yaml").read_text()
    stale.write_bytes(b"x")
    tiny.main([str(run), "--epochs", "2", "--samples", "16"])             # resumes last.pt with epochs=2
    assert not stale.exists()
    assert (run / "config.yaml").read_text() == original and "epochs: 1" in original
    overrides = (run / "config_overrides.yaml").read_text()
    assert "tiny.epochs: 1 -> 2" in overrides


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """A full disk (torch.save raising its 'unexpected pos' error, or ENOSPC) is one CheckpointWriteError naming
    the file and the free space; the previous checkpoint and the directory are as before (no temp file)."""
    import errno

    from shared.engine import CheckpointError, CheckpointWriteError, save_checkpoint
    target = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, target)
    before = target.read_bytes()
    for failure in (RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 1938816 vs 1938708"),
                    OSError(errno.ENOSPC, "No space left on device")):
        def full_disk(obj, fh, _failure=failure):
            fh.write(b"partial")
            raise _failure
        monkeypatch.setattr(torch, "save", full_disk)
        with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*last\.pt.*MiB free") as info:
            save_checkpoint({"step": 2}, target)
        assert isinstance(info.value, CheckpointError)
        assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
