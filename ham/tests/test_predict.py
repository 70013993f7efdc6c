"""ham.predict on the shipped real X-rays with a tiny random HAM saved as a training run."""
from __future__ import annotations

import torch

from shared.config import load_config
from shared.data.labels import NIH_LABELS
from shared.tests.predict_contract import check_records, predict_json, save_run, user_images

from ham.config import HAMConfig, build_model
from ham.predict import main


def test_predict_real_images(tmp_path, capsys):
    cfg = load_config(HAMConfig, "ham/configs/demo.yaml")
    torch.manual_seed(0)
    run = save_run(tmp_path / "run", cfg, build_model(cfg.model, len(NIH_LABELS)))
    images = user_images(tmp_path / "in")
    records = predict_json(main, [*map(str, images.values()), "--run", str(run), "--out", str(tmp_path / "out")],
                           capsys)
    check_records(records, "ham", list(NIH_LABELS), images)
    for r in records:
        assert 0 <= r["anomaly"] <= 1 and r["panels"] == 4     # input, anomaly attention, 2 disease attentions
