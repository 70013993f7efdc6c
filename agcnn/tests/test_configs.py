"""Configs carry the paper's recipe (spec sections 2-3), name a published entry, and the reproduce target works."""
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
    assert all((s.epochs, s.lr, s.lr_step_epochs, s.lr_gamma) == (50, 0.01, 20, 0.1) for s in stages)


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
    assert [s.split(" -m ")[1].split()[0] for s in steps] == ["agcnn.train", "agcnn.test", "shared.report"]
    assert "configs/nih_resnet50.yaml" in steps[0] and str(tmp_path / "runs" / "agcnn" / "nih_resnet50") in steps[1]
