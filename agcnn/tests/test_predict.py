"""agcnn.predict on the shipped real X-rays with a tiny random AG-CNN saved as a (three-stage) training run."""
from __future__ import annotations

import torch

from shared.config import load_config
from shared.tests.predict_contract import check_records, predict_json, save_run, user_images

from agcnn.config import Config
from agcnn.data import label_columns
from agcnn.predict import main
from agcnn.train import build_model, final_checkpoint


def test_predict_real_images(tmp_path, capsys):
    cfg = load_config(Config, "agcnn/configs/demo.yaml")
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_run(run, cfg, build_model(cfg), checkpoint=final_checkpoint(run, cfg))   # stage III's best.pt
    images = user_images(tmp_path / "in")
    records = predict_json(main, [*map(str, images.values()), "--run", str(run), "--out", str(tmp_path / "out")],
                           capsys)
    classes = label_columns(cfg.model.num_classes)
    check_records(records, "agcnn", classes, images)
    for r in records:
        for branch in ("global", "local"):
            assert set(r[branch]) == set(classes) and all(0 <= p <= 1 for p in r[branch].values())
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1         # the crop box, in fractions of the image
