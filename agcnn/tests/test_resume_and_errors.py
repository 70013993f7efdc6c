"""Resume mid-stage ends identical to an uninterrupted run; bad config / data / CLI use gives one clear error."""
import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError
from shared.engine import load_checkpoint, weights_from_checkpoint

from agcnn import test as agcnn_test
from agcnn import train as agcnn_train
from agcnn.data import build_frame
from agcnn.train import build_model

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TINY = ["model.backbone_kwargs={growth_rate: 8, block_config: [1, 1, 1, 1]}", "engine.log_every=1000",
        "engine.ckpt_every_iters=5", "train.global_stage.epochs=2", "train.local_stage.epochs=2",
        "train.local_stage.lr_step_epochs=1", "train.fusion_stage.epochs=1"]


class Interrupted(Exception):
    pass


def train_cli(run: Path, root: Path, *extra: str) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        return agcnn_train.main(["-cfg", str(DEMO), "--no-test", "--run-dir", str(run), "--set", f"data.root={root}",
                                 *TINY, *extra])


def state(path: Path) -> tuple[dict, dict]:
    ckpt = load_checkpoint(path)
    return dict(weights_from_checkpoint(ckpt)), ckpt


def assert_same_tree(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_resume_mid_stage_equals_uninterrupted(twin, tmp_path, monkeypatch):
    straight = train_cli(tmp_path / "straight", twin)

    real_make_loss = agcnn_train.make_loss
    calls = {"n": 0}

    def interrupted_make_loss(stage):   # kill the run inside stage II, epoch 2, after a mid-epoch checkpoint
        loss_fn = real_make_loss(stage)
        if stage.dirname != "stage2_local":
            return loss_fn

        def crashing(model, batch):
            calls["n"] += 1
            if calls["n"] == 18:
                raise Interrupted
            return loss_fn(model, batch)
        return crashing

    monkeypatch.setattr(agcnn_train, "make_loss", interrupted_make_loss)
    with pytest.raises(Interrupted):
        train_cli(tmp_path / "resumed", twin)
    monkeypatch.setattr(agcnn_train, "make_loss", real_make_loss)
    _, partial = state(tmp_path / "resumed" / "stage2_local" / "checkpoints" / "last.pt")
    assert 0 < partial["step_in_epoch"] and partial["epoch"] == 1, "the crash must hit the middle of epoch 2"
    assert not (tmp_path / "resumed" / "stage3_fusion").exists()

    resumed = train_cli(tmp_path / "resumed", twin)
    for stage in ("stage1_global", "stage2_local", "stage3_fusion"):
        for name in ("best.pt", "last.pt"):
            (wa, ca), (wb, cb) = (state(run / stage / "checkpoints" / name) for run in (straight, resumed))
            assert_same_tree(wa, wb, f"{stage}/{name} weights")
        assert_same_tree(ca["optimizer"], cb["optimizer"], f"{stage} optimizer")
        assert ca["scheduler"] == cb["scheduler"] and ca["epoch"] == cb["epoch"]


def test_bad_config_key_names_it(twin, capsys):
    with pytest.raises(SystemExit) as err:
        agcnn_train.main(["-cfg", str(DEMO), "--set", f"data.root={twin}", "model.bogus=1"])
    assert err.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_bad_config_value_is_an_error(make_config, twin):
    with pytest.raises(ConfigError, match="pool"):
        make_config(twin, "model.pool=median")
    with pytest.raises(ValueError, match="14 or 15"):
        build_frame(make_config(twin, "model.num_classes=13").data, 13)


def test_missing_data_root_names_the_layout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        agcnn_train.main(["-cfg", str(DEMO), "--set", f"data.root={tmp_path / 'absent'}"])
    err = capsys.readouterr().err
    assert "absent" in err and "Data_Entry_2017" in err and "images/" in err


def test_missing_start_weights_leave_no_empty_run(tmp_path):
    with pytest.raises(FileNotFoundError):
        agcnn_train.main(["-cfg", str(DEMO), "--set", f"data.root={tmp_path}", f"runs={tmp_path / 'runs'}",
                          f"model.pretrained_path={tmp_path / 'absent.pth'}"])
    assert not (tmp_path / "runs").exists()


def test_missing_images_are_reported_not_dropped(twin, tmp_path, make_config):
    root = tmp_path / "nih"
    shutil.copytree(twin, root)
    victim = sorted((root / "images").glob("*.png"))[3]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        build_frame(make_config(root).data, 15)
    with pytest.warns(UserWarning, match="1 of .* missing"):
        frame = build_frame(make_config(root, "data.on_missing=warn").data, 15)
    assert frame.attrs["missing"] == 1 and victim.name not in set(frame["image_id"])


def test_test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        agcnn_test.main([])
    assert "--run RUN_DIR or --weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        agcnn_test.main(["--weights", str(tmp_path / "w.pt")])
    assert "-cfg" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit):
        agcnn_test.main(["--run", str(tmp_path / "run")])
    assert "config.yaml" in capsys.readouterr().err


def test_seed_fusion_file_through_the_config(make_config, twin, tmp_path):
    fc = {"fc.weight": torch.randn(14, 2048), "fc.bias": torch.randn(14)}
    torch.save(fc, tmp_path / "fusion.pth")
    cfg = make_config(twin, "model.backbone=densenet121", "model.backbone_kwargs={}", "model.num_classes=14",
                      f"model.seed_fusion_fc={tmp_path / 'fusion.pth'}")
    model = build_model(cfg)
    torch.testing.assert_close(model.fusion.weight, fc["fc.weight"])
    with pytest.raises(ValueError, match="densenet121"):
        build_model(make_config(twin, f"model.seed_fusion_fc={tmp_path / 'fusion.pth'}"))


def test_an_earlier_stage_checkpoint_is_flagged_as_having_untrained_heads(tmp_path):
    from agcnn.config import Config
    from shared.config import load_config
    cfg = load_config(Config, DEMO)
    run = tmp_path / "run"
    assert agcnn_test.untrained_heads(cfg, run / "stage1_global" / "checkpoints" / "best.pt") == ["local", "fusion"]
    assert agcnn_test.untrained_heads(cfg, run / "stage2_local" / "checkpoints" / "best.pt") == ["fusion"]
    assert agcnn_test.untrained_heads(cfg, run / "stage3_fusion" / "checkpoints" / "best.pt") == []
    assert agcnn_test.untrained_heads(cfg, tmp_path / "weights.pt") == []       # a file outside a run: no claim
