"""ham.predict on the shipped real X-rays with a tiny random HAM saved as a training run."""
from __future__ import annotations

import torch

from shared.config import load_config
from shared.tests.predict_contract import check_records, predict_json, save_run, user_images

from ham.config import HAMConfig, build_model
from ham.data import nih_classes
from ham.predict import main


def test_predict_real_images(tmp_path, capsys):
    cfg = load_config(HAMConfig, "ham/configs/demo.yaml")
    torch.manual_seed(0)
    run = save_run(tmp_path / "run", cfg, build_model(cfg.model, len(nih_classes(cfg.data))))
    images = user_images(tmp_path / "in")
    records = predict_json(main, [*map(str, images.values()), "--run", str(run), "--out", str(tmp_path / "out")],
                           capsys)
    check_records(records, "ham", nih_classes(cfg.data), images)
    for r in records:
        assert 0 <= r["anomaly"] <= 1 and r["panels"] == 4     # input, anomaly attention, 2 disease attentions


def test_authors_released_layout_gives_the_same_answer(tmp_path, capsys):
    """--weights FILE.pth in the authors' layout (DataParallel's module.model.*; -cfg names the setting) = our run
    of the same weights, with the classes in the order of the authors' classifier rows (Wang's)."""
    from ham.checkpoint import ours_to_original

    cfg = load_config(HAMConfig, "ham/configs/demo.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, len(nih_classes(cfg.data)))
    run = save_run(tmp_path / "run", cfg, model)
    released = tmp_path / "ham_official_split.pth"
    torch.save({f"module.{k}": v for k, v in ours_to_original(model.state_dict()).items()}, released)
    assert next(iter(torch.load(released, weights_only=True))).startswith("module.model.")
    image = str(user_images(tmp_path / "in")["00000001_000.png"])
    ours = predict_json(main, [image, "--run", str(run), "--out", str(tmp_path / "a")], capsys)
    theirs = predict_json(main, [image, "-cfg", "ham/configs/demo.yaml", "--weights", str(released), "--out",
                                 str(tmp_path / "b")], capsys)
    assert theirs[0]["findings"] == ours[0]["findings"]
