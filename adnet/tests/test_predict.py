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


def test_authors_checkpoint_layout_gives_the_same_answer(tmp_path, capsys):
    """--weights FILE.pth.tar in the original key layout (-cfg names the setting) = our run of the same weights."""
    from adnet.checkpoint import ours_to_original

    cfg = load_config(ADNetConfig, "adnet/configs/demo.yaml")
    torch.manual_seed(0)
    model, _ = build_from_config(cfg, len(label_names(cfg.data)), load_pretrained=False)
    run = save_run(tmp_path / "run", cfg, model)
    released = tmp_path / "convnext_atto_ADNet_demo.pth.tar"
    torch.save({"state_dict": ours_to_original(model.state_dict(), model.style)}, released)
    image = str(user_images(tmp_path / "in")["00000001_000.png"])
    ours = predict_json(main, [image, "--run", str(run), "--out", str(tmp_path / "a")], capsys)
    theirs = predict_json(main, [image, "-cfg", "adnet/configs/demo.yaml", "--weights", str(released), "--out",
                                 str(tmp_path / "b")], capsys)
    assert theirs[0]["findings"] == ours[0]["findings"]
