"""ham.checkpoint.load_weights: the authors' released .pth (layout in ham/tests/layouts), ours, and bad files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.engine.checkpoint import CheckpointError
from shared.testing import (assert_unchanged, read_layout, save_truncated, save_with_pickled_object,
                            seeded_state_dict, state_snapshot)

from ham.checkpoint import load_weights, ours_to_original
from ham.model import HAM

LAYOUT = read_layout(Path(__file__).parent / "layouts" / "ham_resnet50_ds8.keys.json.gz")


@pytest.mark.parametrize("downsampling, pooling", [(8, True), (16, True), (32, True), (8, False)])
def test_every_stride_has_the_released_layout(downsampling, pooling):
    """Our HAM under the authors' names: exactly the released keys, shapes and dtypes, at every stride."""
    with torch.device("meta"):
        model = HAM(num_classes=14, backbone="resnet50", downsampling=downsampling, using_pooling=pooling)
    ours = {k: (tuple(v.shape), v.dtype) for k, v in ours_to_original(model.state_dict()).items()}
    assert ours == {k: (shape, dtype) for k, shape, dtype in LAYOUT}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A file as the authors saved it: torch.save(DataParallel(net).state_dict()) -> module.model.* keys."""
    state = seeded_state_dict(LAYOUT, seed=21)
    path = tmp_path_factory.mktemp("ham_released") / "resnet50_best_auc.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path, state


def test_released_file_loads_every_tensor_in_place(released):
    path, state = released
    model = HAM(num_classes=14, backbone="resnet50")
    note = load_weights(model, path)
    assert "authors' released layout" in note
    fa = model.fa.block
    for key, tensor in [("model.conv1.weight", model.backbone.conv1.weight),
                        ("model.layer4.2.bn3.running_var", model.backbone.layer4[2].bn3.running_var),
                        ("model.fa_layer.conva.0.weight", model.fa.conv_in[0].weight),
                        ("model.fa_layer.convb.1.running_mean", model.fa.conv_out[1].running_mean),
                        ("model.fa_layer.fa.conv1.weight", fa.context.weight),
                        ("model.fa_layer.fa.channel_fc.0.weight", fa.fc1.weight),
                        ("model.fa_layer.fa.channel_fc.2.weight", fa.fc2.weight),
                        ("model.fa_layer.fa.conv2.weight", fa.transform.weight),
                        ("model.fa_layer.fa.conv3.weight", fa.spatial.weight),
                        ("model.fa_layer.fa.conv4.weight", fa.spatial_conv.weight),
                        ("model.fa_layer.fa.bn4.bias", fa.spatial_bn.bias), ("model.fa_layer.fa.gamma", fa.gamma),
                        ("model.cls_head.0.weight", model.head[0].weight),
                        ("model.cls_head.1.running_var", model.head[1].running_var),
                        ("model.anomaly_fc.weight", model.ano_fc.weight), ("model.cls_fc.weight", model.cls_fc.weight)]:
        torch.testing.assert_close(tensor.detach(), state[key], rtol=0, atol=0, msg=key)
    back = ours_to_original(model.state_dict())             # ours -> original: every tensor unchanged
    assert back.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0, msg=key)


def test_released_state_dict_without_module_prefix_and_at_another_stride(released):
    _, state = released
    model = HAM(num_classes=14, backbone="resnet50", downsampling=32)
    load_weights(model, state)                              # an object, keys model.* (no DataParallel)
    torch.testing.assert_close(model.cls_fc.weight.detach(), state["model.cls_fc.weight"])


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return HAM(num_classes=kw.pop("num_classes", 3), backbone="resnet18", fa_channels=16, head_channels=16, **kw)


def test_our_checkpoint_loads_its_ema_weights(tmp_path):
    src, ema = _tiny(1), _tiny(2)
    path = tmp_path / "best.pt"
    torch.save({"format": 1, "model": src.state_dict(), "ema": ema.state_dict(), "best_source": "ema"}, path)
    dst = _tiny(3)
    assert "our layout" in load_weights(dst, path)
    for key, value in ema.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_another_architecture_is_one_error_listing_keys_and_loads_nothing(released):
    path, _ = released
    model = _tiny()
    before = state_snapshot(model)
    with pytest.raises(CheckpointError) as err:
        load_weights(model, path)
    message = str(err.value)
    assert message.startswith(f"{path} (the authors' released layout (module.model.*)) does not fit this HAM")
    assert "backbone.layer1.0.conv3.weight" in message                       # resnet50 key our resnet18 lacks
    assert "shape mismatches" in message and "cls_fc.weight" in message
    assert_unchanged(model, before)


def test_another_class_count_is_refused(tmp_path):
    path = tmp_path / "five.pt"
    torch.save({"format": 1, "model": _tiny(num_classes=5).state_dict()}, path)
    model = _tiny()
    with pytest.raises(CheckpointError, match=r"\('cls_fc.weight', \(5, 16\), \(3, 16\)\)"):
        load_weights(model, path)


def _truncated(path):
    save_truncated(_tiny().state_dict(), path)


def _pickled_object(path):
    save_with_pickled_object(_tiny().state_dict(), path)


def _adnet_style(path):
    torch.save({"state_dict": {"stages.0.0.gamma": torch.ones(3)}, "epoch": 1}, path)


@pytest.mark.parametrize("make, expected", [(_truncated, "cannot load checkpoint"),
                                            (_pickled_object, "cannot load checkpoint"),
                                            (_adnet_style, "not a HAM checkpoint")])
def test_bad_files_are_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "download.pth"
    make(path)
    model = _tiny()
    before = state_snapshot(model)
    with pytest.raises(CheckpointError, match=expected) as err:
        load_weights(model, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert_unchanged(model, before)


def test_fine_tuning_starts_from_the_authors_file(released):
    """model.init_weights: ham.train's model starts from every weight of the file (no ImageNet download)."""
    from ham.config import ModelConfig, build_model
    path, state = released
    model = build_model(ModelConfig(pretrained=True, init_weights=str(path)), num_classes=14)
    torch.testing.assert_close(model.fa.block.gamma.detach(), state["model.fa_layer.fa.gamma"], rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.bn1.running_mean, state["model.bn1.running_mean"], rtol=0, atol=0)


def test_best_by_metric_keeps_the_best_weights_across_a_resume(tmp_path):
    """ham.train's best_tiou.pt / best_tiobb.pt: written at each new best (NaN never), value read back on resume."""
    from ham.train import BestByMetric
    keeper = BestByMetric(tmp_path, "tiou", "val/tiou_mean")
    first, second, worse = _tiny(1), _tiny(2), _tiny(3)
    keeper.update({"val/tiou_mean": 0.30}, first, step=10)
    keeper.update({"val/tiou_mean": float("nan")}, worse, step=15)
    keeper.update({"val/auroc_mean": 0.9}, worse, step=16)                  # no localisation metric: no change
    keeper.update({"val/tiou_mean": 0.40}, second, step=20)
    resumed = BestByMetric(tmp_path, "tiou", "val/tiou_mean")
    assert resumed.value == pytest.approx(0.40)
    resumed.update({"val/tiou_mean": 0.35}, worse, step=30)
    dst = _tiny(4)
    load_weights(dst, tmp_path / "best_tiou.pt")
    for key, value in second.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("mode, explicit, expected", [("by_metric", False, ("best_tiou.pt", "best_tiobb.pt")),
                                                      ("best", False, ("best.pt", "best.pt")),
                                                      ("by_metric", True, ("best.pt", "best.pt"))])
def test_localisation_tables_come_from_the_checkpoints_of_their_metric(tmp_path, mode, explicit, expected):
    from shared.config import load_config
    from ham.config import HAMConfig
    from ham.test import localisation_checkpoints
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name in ("best.pt", "best_tiou.pt", "best_tiobb.pt"):
        (ckpts / name).write_bytes(b"")
    cfg = load_config(HAMConfig, None, [f"eval.loc_checkpoints={mode}"])
    paths = localisation_checkpoints(cfg, ckpts / "best.pt", None if explicit else tmp_path)
    assert (paths["tiou"].name, paths["tiobb"].name) == expected
