"""DDP under torchrun on CPU (gloo, 2 processes, grad accumulation 2 x batch 2 per rank): same weights as one
process with batch 8."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPT = Path(__file__).parent / "engine_scripts" / "train_tiny.py"


pytestmark = pytest.mark.usefixtures("restore_torch_flags")

ARGS = ["--epochs", "2", "--samples", "64", "--dropout", "0", "--ckpt-every", "3", "--val-every", "4", "--ema", "0.5"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed/gloo missing")
def test_torchrun_two_processes_match_single_process_double_batch(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(SCRIPT.parents[3]) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["CUDA_VISIBLE_DEVICES"] = ""            # CPU + gloo even on a GPU machine
    ddp_dir = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(SCRIPT), str(ddp_dir), *ARGS, "--batch", "2", "--accum", "2"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1                      # only rank 0 reports

    spec = importlib.util.spec_from_file_location("engine_train_tiny_ddp_ref", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    single_dir = tmp_path / "single"
    mod.main([str(single_dir), *ARGS, "--batch", "8"])

    for name in ("last.pt", "best.pt"):
        a = torch.load(ddp_dir / "checkpoints" / name, weights_only=True)
        b = torch.load(single_dir / "checkpoints" / name, weights_only=True)
        assert a["world_size"] == 2 and len(a["rng_per_rank"]) == 2 and a["global_step"] == b["global_step"]
        for part in ("model", "ema"):
            for k in b[part]:
                assert not k.startswith("module.")
                assert torch.allclose(a[part][k], b[part][k], atol=1e-5, rtol=1e-4), (name, part, k)
    assert sorted(p.name for p in (ddp_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    val = [json.loads(x) for x in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val if r["split"] == "val"] == [4, 8, 12, 16]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed/gloo missing")
def test_ddp_validation_equals_a_single_process_evaluation_of_best(tmp_path):
    """A BatchNorm model under torchrun: the validation metric logged for best.pt (each sample evaluated exactly
    once, shards gathered) equals evaluating best.pt's weights in one process, to 1e-6."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(SCRIPT.parents[3]) + os.pathsep + env.get("PYTHONPATH", "")
    run = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(SCRIPT), str(run), "--bn", "--epochs", "2", "--samples", "48", "--batch", "4",
                           "--val-every", "3"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    spec = importlib.util.spec_from_file_location("engine_train_tiny_bn", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    model = mod.make_model(bn=True)
    model.load_state_dict(best["model"])
    val = mod.NoisyDataset(37, seed=1, noise=0.0)
    with torch.no_grad():
        single = float(((model.eval()(val.x) - val.y) ** 2).double().mean())
    assert best["best_metric"] == pytest.approx(single, abs=1e-6)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert best["best_metric"] in [r["val/loss"] for r in logged if r["split"] == "val"]
