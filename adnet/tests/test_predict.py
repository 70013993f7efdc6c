"""adnet.predict on the shipped real X-rays with a tiny random ADNet saved as a training run."""
from __future__ import annotations

import torch

from shared.config import load_config
from shared.tests.predict_contract import check_records, predict_json, save_run, user_images

from adnet.config import ADNetConfig
from adnet.data import label_names
from adnet.evaluate import build_from_config
from adnet.predict import main


def test_predict_real_images(tmp_path, capsys):
    cfg = load_config(ADNetConfig, "adnet/configs/demo.yaml")
    torch.manual_seed(0)
    model, _ = build_from_config(cfg, len(label_names(cfg.data)), load_pretrained=False)
    run = save_run(tmp_path / "run", cfg, model)
    images = user_images(tmp_path / "in")
    records = predict_json(main, [*map(str, images.values()), "--run", str(run), "--out", str(tmp_path / "out"),
                                  "--top", "2"], capsys)
    check_records(records, "adnet", label_names(cfg.data), images)
    assert all(r["panels"] == 3 for r in records)           # the input + one Grad-CAM per top finding
