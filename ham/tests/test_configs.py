"""One config per published setting with the recipe of spec section 3; reproduce targets, CLIs and the visdom
sink fail clearly (or, for visdom, not at all)."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shared.config import load_config
from shared.data._common import DataError

from ham import test as ham_test
from ham import train as ham_train
from ham.config import CONFIG_DIR, HAMConfig

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = ["nih_official_split", "nih_without_bboxes", "chexpert"] + \
    [f"nih_{p}_fold{k}" for p in ("cls", "loc") for k in range(1, 6)]


def test_every_published_setting_has_a_config_and_a_published_entry():
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")} - {"base", "nih_cls_base", "nih_loc_base"}
    assert names == set(PUBLISHED) | {"demo"}
    published = yaml.safe_load((CONFIG_DIR.parent / "published.yaml").read_text())
    keys = [load_config(HAMConfig, CONFIG_DIR / f"{n}.yaml").published_key for n in PUBLISHED]
    assert len(set(keys)) == len(keys) and set(keys) <= set(published)


@pytest.mark.parametrize("name", PUBLISHED)
def test_recipe_of_spec_section_3(name):
    cfg = load_config(HAMConfig, CONFIG_DIR / f"{name}.yaml")
    m, o, e, d = cfg.model, cfg.optim, cfg.engine, cfg.data
    assert (m.backbone, m.downsampling, m.using_pooling, m.using_dilation, m.pretrained) == \
        ("resnet50", 8, True, True, True)
    assert (d.img_size, d.scale_max_pct, d.use_crf) == (512, 12, False)
    assert (o.lr, o.weight_decay, o.step_epochs, o.gamma) == (2e-5, 1e-4, 10, 0.1)
    assert (o.batch_size, e.grad_accum, o.micro_batch) == (24, 1, 12)   # batch 24 in two exact micro-batches
    assert e.amp == "bf16"
    assert e.epochs == (30 if "_loc_" in name else 20)
    if "fold" in name:
        assert d.fold == int(name[-1])
    if name in ("nih_official_split", "nih_without_bboxes") or "_loc_" in name:
        assert d.val is None and not d.honest_validation         # faithful: the original validated on test
    assert bool(d.train_boxes) == (name.startswith("nih_cls") or "_loc_" in name)


def test_honest_validation_switch_is_a_config_override():
    cfg = load_config(HAMConfig, CONFIG_DIR / "nih_loc_fold1.yaml", ["data.honest_validation=true"])
    assert cfg.data.honest_validation and cfg.data.val is None


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target,expect", [("reproduce-ham-nih", "NIH ChestX-ray14 not found"),
                                           ("reproduce-ham-nih-loc", "NIH ChestX-ray14 not found"),
                                           ("reproduce-ham-chexpert", "CheXpert not found")])
def test_reproduce_targets_fail_clearly_without_data(tmp_path, target, expect):
    missing = tmp_path / "nonexistent"
    # -o install: never (re)install from a test
    res = subprocess.run(["make", "-s", "-o", "install", target, f"DATA={missing}", f"RUNS={tmp_path / 'runs'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert expect in res.stdout and str(missing) in res.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_eval_authors_target_names_what_is_missing(tmp_path):
    weights = tmp_path / "resnet50_best_auc.pth"
    run = lambda *extra: subprocess.run(["make", "-s", "-o", "install", "eval-authors-ham", f"DATA={tmp_path / 'no'}",  # noqa: E731
                                         f"RUNS={tmp_path / 'runs'}", *extra], cwd=REPO, capture_output=True,
                                        text=True, timeout=120)
    assert "set WEIGHTS=" in run().stderr
    assert "WEIGHTS not found" in run(f"WEIGHTS={weights}").stderr
    weights.write_bytes(b"")
    res = run(f"WEIGHTS={weights}")
    assert res.returncode != 0 and "NIH ChestX-ray14 not found" in res.stdout
    assert not (tmp_path / "runs").exists()


def test_cli_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ham_test.main([])
    assert "--run RUN_DIR" in capsys.readouterr().err
    with pytest.raises(DataError, match="does not exist"):
        ham_train.main(["-cfg", str(CONFIG_DIR / "demo.yaml"), "--run-dir", str(tmp_path / "run"),
                        "--set", f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ham_test.load_model(load_config(HAMConfig, CONFIG_DIR / "demo.yaml"), tmp_path / "none.pt", 14, "cpu")


def test_a_run_is_named_by_its_config_not_its_folder(tmp_path):
    # ham.train writes the config's name into config.yaml (--run-dir demo_out/ham is the config "demo"); a run
    # written before that says "ham" and keeps its folder's name
    from shared.config import to_dict
    for recorded, expected in (("demo", "demo"), ("ham", "demo_out")):
        run = tmp_path / recorded / "demo_out" / "ham"
        run.mkdir(parents=True)
        cfg = load_config(HAMConfig, CONFIG_DIR / "demo.yaml", [f"name={recorded}"])
        (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
        assert ham_test.load_run(None, None, run)[3] == expected


class _Logger:
    def __init__(self, vis):
        self.vis, self.warnings = vis, []

    def warn(self, msg):
        self.warnings.append(msg)


class _Vis:
    def __init__(self, fail=False):
        self.fail, self.calls = fail, []

    def images(self, grid, **kw):
        if self.fail:
            raise ConnectionError("server went away")
        self.calls.append(grid.shape)


def test_visdom_grid_never_stops_training():
    import torch
    from types import SimpleNamespace
    from ham.train import visdom_grid
    b, c, s = 3, 2, 8
    batch = {"image": torch.rand(b, 3, s, s), "masks": torch.zeros(b, c, s, s, dtype=torch.uint8),
             "has_box": torch.ones(b, c)}
    out = SimpleNamespace(refined_cls=torch.rand(b, c, s, s), refined_ano=torch.rand(b, 1, s, s))
    trainer = SimpleNamespace(logger=_Logger(None))
    visdom_grid(trainer, batch, out)                                  # no server: nothing happens
    trainer.logger.vis = _Vis()
    visdom_grid(trainer, batch, out)                                  # input / GT / disease / positive rows
    assert trainer.logger.vis.calls == [(4 * b, 3, s, s)]
    trainer.logger.vis = _Vis(fail=True)
    visdom_grid(trainer, batch, out)                                  # an error disables the sink, no raise
    assert trainer.logger.vis is None and "disabled" in trainer.logger.warnings[0]
