"""Every method trains under ``torchrun --standalone --nproc_per_node=2`` on CPU (gloo): two optimizer steps of the
demo's tiny model on a synthetic twin, then a validation, exit status 0 (CXR-CLIP stopped at step 2 before: BERT's
unused pooler). That the validation metric equals a single-process evaluation of best.pt is the engine's test
(test_engine_ddp.py: shared by every method, which all validate through Trainer)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from shared.tests.test_fault_matrix import ALL, METHODS, twins  # noqa: F401 - the fixture is used by name

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed/gloo missing")
@pytest.mark.parametrize("name", ALL)
def test_method_trains_under_torchrun(name, twins, tmp_path):  # noqa: F811
    m = METHODS[name]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    runs = tmp_path / "runs"
    epochs_key = m.iters_key.replace("max_iters", "epochs")
    argv = m.train_argv(twins(m.data), runs, f"{m.iters_key}=2", f"{epochs_key}=3")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", f"{name}.train", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checkpoints = list(runs.rglob("last.pt"))
    assert checkpoints, proc.stdout[-2000:]
    assert all(torch.load(p, weights_only=True)["global_step"] == 2 for p in checkpoints)   # a second DDP step
    events = [json.loads(line) for path in runs.rglob("metrics.jsonl") for line in path.read_text().splitlines()]
    assert any(e["split"] == "val" for e in events)
