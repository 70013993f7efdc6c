"""Configs carry the paper's recipe (spec sections 2-3), name a published entry, and the reproduce target works."""
import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.config import load_config
from shared.data import splits
from shared.report import load_published

from agcnn.config import Config

AGCNN = Path(__file__).resolve().parents[1]
REPO = AGCNN.parent
CONFIGS = sorted(p for p in (AGCNN / "configs").glob("*.yaml") if p.stem not in ("base", "demo"))
PAPER = {"nih_resnet50": ("resnet50", (128, 64, 64)), "nih_densenet121": ("densenet121", (64, 32, 32)),
         "nih_l1": ("resnet50", (128, 64, 64)), "nih_l2": ("resnet50", (128, 64, 64))}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_names_a_published_entry(path):
    cfg = load_config(Config, path)
    if cfg.published_key is not None:
        assert cfg.published_key in load_published(AGCNN)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_settings_follow_the_spec(name):
    cfg = load_config(Config, AGCNN / "configs" / f"{name}.yaml")
    backbone, batches = PAPER[name]
    m, d, t = cfg.model, cfg.data, cfg.train
    assert (m.backbone, m.num_classes, m.pool, m.tau, m.threshold, m.crop_size) == (backbone, 15, "max", 0.7,
                                                                                    "fixed", 224)
    assert (d.split, d.resize, d.image_size, d.hflip) == ("chexnet", 256, 224, True)
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.9, 1e-4)
    assert t.mode == "staged"
    stages = (t.global_stage, t.local_stage, t.fusion_stage)
    assert tuple(s.batch_size for s in stages) == batches
    assert all((s.epochs, s.lr, s.lr_step_epochs, s.lr_gamma) == (50, 0.01, [20], 0.1) for s in stages)


def test_shipped_chexnet_split_has_the_published_counts():
    lists = splits.chexnet_lists(None)
    assert lists["split"].value_counts().to_dict() == {"train": 78468, "val": 11219, "test": 22433}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_reproduce_target_fails_clearly_without_data_and_chains_train_test_report(tmp_path):
    missing = tmp_path / "nonexistent"
    # -o install: never (re)install from a test
    res = subprocess.run(["make", "-s", "-o", "install", "reproduce-agcnn-nih", f"DATA={missing}",
                          f"RUNS={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "NIH ChestX-ray14 not found" in res.stdout and str(missing / "nih") in res.stdout
    assert "Data_Entry_2017" in res.stdout and not (tmp_path / "runs").exists()
    (tmp_path / "data" / "nih").mkdir(parents=True)
    (tmp_path / "data" / "nih" / "Data_Entry_2017.csv").write_text("")
    dry = subprocess.run(["make", "-n", "-o", "install", "reproduce-agcnn-nih", f"DATA={tmp_path / 'data'}",
                          f"RUNS={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    steps = [line for line in dry.stdout.splitlines() if " -m " in line]
    assert [s.split(" -m ")[1].split()[0] for s in steps] == ["shared.weights_manifest", "agcnn.train", "agcnn.test",
                                                              "shared.report"]   # the weights preflight first
    steps = steps[1:]
    assert "configs/nih_resnet50.yaml" in steps[0] and str(tmp_path / "runs" / "agcnn" / "nih_resnet50") in steps[1]


def _stage_lrs(cfg, stage, epochs):
    import torch

    from agcnn.train import make_optimizer, make_scheduler

    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))], stage)
    sched = make_scheduler(opt, stage)
    lrs = []
    for _ in range(epochs):  # the Trainer steps it once per epoch (scheduler_interval="epoch")
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_base_config_divides_the_lr_once_after_epoch_20():
    """Spec: "lr 0.01 divided by 10 after 20 epochs, 50 epochs per stage" -> 0.01 for epochs 0-19, 0.001 after;
    no second drop at 40 (what an int 20, StepLR semantics, would do)."""
    cfg = load_config(Config, AGCNN / "configs" / "base.yaml")
    for stage in (cfg.train.global_stage, cfg.train.local_stage, cfg.train.fusion_stage):
        lrs = _stage_lrs(cfg, stage, stage.epochs)
        assert len(lrs) == 50
        assert lrs[:20] == pytest.approx([0.01] * 20) and lrs[20:] == pytest.approx([0.001] * 30)
    every_20 = dataclasses.replace(cfg.train.global_stage, lr_step_epochs=20)
    assert _stage_lrs(cfg, every_20, 50)[39:41] == pytest.approx([0.001, 0.0001])


def test_lr_step_epochs_takes_an_int_or_a_list_on_the_command_line():
    from shared.config import parse_config

    base = str(AGCNN / "configs" / "base.yaml")
    cfg, _ = parse_config(Config, ["-cfg", base, "--set", "train.global_stage.lr_step_epochs=[20,35]",
                                   "train.local_stage.lr_step_epochs=20"])
    assert cfg.train.global_stage.lr_step_epochs == [20, 35] and cfg.train.local_stage.lr_step_epochs == 20
    with pytest.raises(SystemExit):
        parse_config(Config, ["-cfg", base, "--set", "train.global_stage.lr_step_epochs=soon"])
