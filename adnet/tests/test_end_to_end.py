"""The one slow test: the demo path on a tiny synthetic NIH twin — train -> test -> k-NN, honest validation
(train-then-test itself, the same for all five methods: shared/tests/test_train_then_test.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import load_config
from shared.data import synthetic

from adnet import knn as adnet_knn
from adnet import test as adnet_test
from adnet import train as adnet_train
from adnet.config import ADNetConfig

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.slow
def test_learns_on_the_synthetic_twin(tmp_path):
    root = synthetic.generate("nih", tmp_path / "nih", n=260, size=96, seed=3)
    sets = [f"data.nih_root={root}", f"runs_root={tmp_path / 'runs'}", "engine.epochs=4", "optim.lr=3.0e-3",
            "data.honest_validation=true", "data.val_fraction=0.15", "eval.knn_select=val",
            "engine.ema_decay=0.9"]
    cfg = load_config(ADNetConfig, DEMO, sets)
    run_dir = adnet_train.run(cfg)
    # the test CLI on our checkpoint, into another directory
    out = tmp_path / "eval"
    rc = adnet_test.main(["--run", str(run_dir), "--run-dir", str(out)])   # its config.yaml and best.pt
    assert rc == 0 and (out / "results.json").is_file() and (out / "roc.png").is_file()
    results = json.loads((out / "results.json").read_text())
    metrics = results["metrics"]
    auroc = metrics["auroc"]
    assert auroc["mean"] > 0.6, auroc                                   # chance is 0.5
    assert list(auroc)[:3] == ["Atelectasis", "Cardiomegaly", "Effusion"]   # Wang order
    assert {"auroc_raw", "auroc_ema", "f1", "recall"} <= set(metrics)
    assert any("validation split" in n for n in results["notes"])
    assert list(metrics["auroc_raw"])[:3] == list(metrics["auroc_ema"])[:3] == ["Atelectasis", "Cardiomegaly", "Effusion"]
    assert "per-class AUROC, raw vs EMA" in (out / "test_metrics.md").read_text()
    # k-NN on the trained features, grid cell picked on validation
    knn = adnet_knn.run_knn(cfg, run_dir / "checkpoints" / "best.pt", tmp_path / "knn")
    assert knn["metrics"]["auroc"]["mean"] > 0.6
    assert (tmp_path / "knn" / "knn_metrics.md").is_file()
