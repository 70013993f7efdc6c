"""Every method trains under ``torchrun --standalone --nproc_per_node=2`` on CPU (gloo): two optimizer steps of the
demo's tiny model on a synthetic twin, then a validation, exit status 0 (CXR-CLIP stopped at step 2 before: BERT's
unused pooler). The validation metric the run logged for best.pt equals the method's own ``evaluate`` run on
best.pt in one process, to 1e-6 (ADNet's differed before: the sharded evaluation padded the split with duplicates).
The validation splits have an odd size (CXR-CLIP: an odd number of batches, which its ranks share out), so two
ranks shard them unevenly and a padding duplicate would change the metric."""
from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from shared.engine import Trainer
from shared.tests.test_fault_matrix import ALL, METHODS, one_thread, twins  # noqa: F401 - fixtures used by name

REPO = Path(__file__).resolve().parents[2]


# CXR-CLIP's 7 validation pairs in batches of 3: 3 batches, dealt 2 + 1 to the ranks
ODD_VALIDATION = {"cxrclip": ("data.eval_batch_size=3",)}


def torchrun(name: str, argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", f"{name}.train", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def validate_in_one_process(name: str, argv: list[str], run: Path, monkeypatch) -> tuple[dict, list[int]]:
    """``<method>.train --resume run`` in this process with ``Trainer.fit`` replaced by
    ``validate_checkpoint()``: the method builds its model, validation data and ``evaluate`` exactly as for
    training, then scores best.pt once. Returns the metrics and the sizes of the validation sets it evaluated."""
    sizes: list[int] = []
    results: list[dict] = []
    make_loader = Trainer.make_loader

    def spy_loader(self, dataset, *args, train=True, **kwargs):
        if not train:
            sizes.append(len(dataset))
        return make_loader(self, dataset, *args, train=train, **kwargs)

    def validate_instead_of_fit(self, train_loader):
        results.append(self.validate_checkpoint())
        return {}

    monkeypatch.setattr(Trainer, "make_loader", spy_loader)
    monkeypatch.setattr(Trainer, "fit", validate_instead_of_fit)
    if name == "cxrclip":   # its validation deals whole batches to the ranks: count batches, not images
        module = importlib.import_module("cxrclip.train")
        by_batches = module.val_loader_for_rank

        def spy_batches(*args, **kwargs):
            loader = by_batches(*args, **kwargs)
            sizes.append(len(loader))
            return loader
        monkeypatch.setattr(module, "val_loader_for_rank", spy_batches)
    importlib.import_module(f"{name}.train").main([*argv, "--resume", str(run)])
    assert len(results) == 1, results
    return results[0], sizes


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed/gloo missing")
@pytest.mark.parametrize("name", ALL)
def test_method_under_torchrun_logs_the_single_process_validation(name, twins, tmp_path, monkeypatch):  # noqa: F811
    m = METHODS[name]
    runs = tmp_path / "runs"
    epochs_key = m.iters_key.replace("max_iters", "epochs")
    # train_argv carries --no-test: the test pass after training is not what this checks
    argv = m.train_argv(twins(m.data), runs, f"{m.iters_key}=2", f"{epochs_key}=3", *ODD_VALIDATION.get(name, ()))
    proc = torchrun(name, argv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checkpoints = list(runs.rglob("best.pt"))
    assert len(checkpoints) == 1, proc.stdout[-2000:]
    assert torch.load(checkpoints[0].with_name("last.pt"), weights_only=True)["global_step"] == 2   # a 2nd DDP step
    best = torch.load(checkpoints[0], weights_only=True)
    assert best["world_size"] == 2
    monitor, logged = best["engine"]["monitor"], best["best_metric"]
    events = [json.loads(line) for line in (checkpoints[0].parents[1] / "metrics.jsonl").read_text().splitlines()]
    assert logged in [e[monitor] for e in events if e["split"] == "val"]
    assert math.isfinite(logged)

    (run,) = [p for p in runs.glob("*/*/*") if p.is_dir()]
    single, sizes = validate_in_one_process(name, argv, run, monkeypatch)
    assert sizes and sizes[0] % 2 == 1, sizes     # uneven shards: padding would duplicate a sample
    assert single[monitor] == pytest.approx(logged, abs=1e-6, rel=0)
    at_best = {key: best["best_metrics"][key] for key in single}   # the other metrics of that validation too
    assert single == pytest.approx(at_best, abs=1e-6, rel=0, nan_ok=True)
