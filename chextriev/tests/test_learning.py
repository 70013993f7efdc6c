"""The one slow end-to-end test: V6 (small) trains on the synthetic twin through train.py and test.py (given the
run alone) and its retrieval beats a label-shuffled baseline computed on the same embeddings."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shared.config import load_config
from shared.metrics.retrieval import CLASS_AVERAGE, knn_search, retrieval_metrics

from chextriev.config import ChextrievConfig
from chextriev.models import build_model
from chextriev.prepare import Prepared
from chextriev import test as cx_test
from chextriev.train import make_datasets, predict, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _map10(emb, labels):
    _, nb = knn_search(emb, 10, faithful_drop_first=True)
    return retrieval_metrics(labels, nb, 10).loc[CLASS_AVERAGE, "mAP"]


@pytest.mark.slow
def test_v6_learns_on_synthetic_twin(prepared_dir, tmp_path):
    cfg = load_config(ChextrievConfig, CONFIGS / "demo.yaml", [
        f"data.prepared={prepared_dir}", f"runs_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.crop_size=32", "model.dim=64", "model.heads=2", "model.dim_head=32", "engine.epochs=8",
        "optim.lr=1.0e-3", "eval.strips=1", "eval.subgroups=true", "val_per_epoch=2",
        "data.limit_train=96"])                       # 6 steps per epoch: validations after steps 3 and 6
    p = Prepared(prepared_dir)
    test_rows = p.split("test")
    labels = p.labels[test_rows].any(1).astype(np.int64)

    torch.manual_seed(cfg.engine.seed)
    untrained = build_model(cfg.model).eval()
    ds = make_datasets(cfg, p, untrained, ("test",))["test"]
    before = _map10(predict(untrained, torch.utils.data.DataLoader(ds, batch_size=64), "cpu")["embedding"].numpy(),
                    labels)

    run_dir = train(cfg)
    val_epochs = [r["epoch"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                  if r["split"] == "val"]
    assert val_epochs == [e for e in range(cfg.engine.epochs) for _ in range(2)]      # twice per epoch
    assert cx_test.main(["--run", str(run_dir)]) == 0      # the run alone: its config.yaml, data.prepared included
    emb = np.load(run_dir / "retrieval" / "embeddings.npy")
    results = json.loads((run_dir / "results.json").read_text())
    ours = results["metrics"]["mAP@10"][CLASS_AVERAGE]
    rng = np.random.default_rng(0)
    shuffled = np.mean([_map10(emb, labels[rng.permutation(len(labels))]) for _ in range(10)])
    print(f"mAP@10: trained {ours:.3f}, untrained {before:.3f}, label-shuffled {shuffled:.3f}")
    assert ours > shuffled + 0.05

    # the CLI outputs a user looks at
    out = run_dir / "retrieval"
    for name in ("topk.csv", "strip_0.png", "subgroups_9cls.csv", "table_9cls_top10_skip0.txt",
                 "table_17cls_top3_skip1.csv", "per_query_9cls_top10.csv"):
        assert (out / name).exists(), name
    assert ours == pytest.approx(pd.read_csv(out / "table_9cls_top10_skip0.csv", index_col=0).loc[CLASS_AVERAGE, "mAP"])
    notes = "\n".join(results["notes"])
    assert "protocol: fixed" in notes and f"prepared data: {Path(prepared_dir).resolve()} (label_policy=yes_wins" in notes
    assert (run_dir / "checkpoints" / "best.pt").exists()
