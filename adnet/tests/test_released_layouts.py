"""The authors' released checkpoints, as laid out in adnet/tests/layouts, load into our full-size ADNet as is."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import adnet
from adnet.checkpoint import CheckpointKeyError, ours_to_original
from adnet.model import MODEL_NAMES, build_model
from shared.testing import (assert_unchanged, read_layout, save_truncated, save_with_pickled_object,
                            seeded_state_dict, state_snapshot)

from .conftest import tiny_model

LAYOUTS = Path(__file__).parent / "layouts"


def _layout(name: str, num_classes: int):
    """The layout of released file ``name``: the NIH one with the classifier resized (CheXpert has its own)."""
    if name.startswith("resnet50"):
        base = "adnet_resnet50_ADNet_IN1K_NIH"
    else:
        base = "adnet_convnext_tiny_ADNet_IN1K_CheXpert" if num_classes == 5 else "adnet_convnext_tiny_ADNet_IN1K_NIH"
    head = "fc." if name.startswith("resnet50") else "head."
    return [(k, (num_classes, *shape[1:]) if k.startswith(head) else shape, dtype)
            for k, shape, dtype in read_layout(LAYOUTS / f"{base}.keys.json.gz")]


@pytest.mark.parametrize("name", sorted(MODEL_NAMES))
def test_every_released_name_has_the_layout_of_its_file(name):
    """All 16 registered names: our model mapped to the original names gives exactly the file's keys, shapes and
    dtypes (the classifier sized by the name's class count)."""
    with torch.device("meta"):
        model = build_model(name)
    ours = {k: (tuple(v.shape), v.dtype) for k, v in ours_to_original(model.state_dict(), model.style).items()}
    expected = {k: (shape, dtype) for k, shape, dtype in _layout(name, MODEL_NAMES[name])}
    assert ours == expected


def _check_named_places(model, state, style):
    """A few original tensors, each read back from the module the layouts README says it is."""
    dec0, dec1 = model.decoder
    pairs = [("attn_decoder.0.norm1_q.weight", dec0.norm_q.weight), ("attn_decoder.1.norm1_kv.bias", dec1.norm_kv.bias),
             ("attn_decoder.0.norm2.weight", dec0.norm_mlp.weight), ("attn_decoder.1.attn.kv.weight", dec1.attn.kv.weight),
             ("attn_decoder.0.mlp.fc1.0.weight", dec0.mlp[0].weight),
             ("attn_decoder.1.mlp.fc2.3.running_var", dec1.mlp[7].running_var),
             ("global_pool.spatial_encode.0.weight", model.hmt.filter.weight),
             ("global_pool.spatial_encode.1.running_mean", model.hmt.bn1.running_mean),
             ("global_pool.channel_encode.0.weight", model.hmt.proj.weight),
             ("global_pool.channel_encode.1.bias", model.hmt.bn2.bias), ("fc_layer.0.weight", model.fc_layer[0].weight)]
    if style == "convnext":
        pairs += [("attn_decoder.0.mlp.dw_conv.0.weight", dec0.mlp[3].weight),
                  ("attn_decoder.0.mlp.fc2.0.running_var", dec0.mlp[4].running_var),
                  ("stages.2.8.pwconv1.weight", model.backbone.stages[2].blocks[8].mlp.fc1.weight),
                  ("downsample_layers.0.1.bias", model.backbone.stem[1].bias),
                  ("norm.weight", model.norm.weight), ("head.weight", model.head.weight)]
    else:
        pairs += [("attn_decoder.0.mlp.dw_conv.0.weight", dec0.mlp[3].conv.weight),
                  ("attn_decoder.1.mlp.fc1.2.weight", dec1.mlp[2].weight),
                  ("attn_decoder.1.mlp.fc2.1.running_mean", dec1.mlp[5].running_mean),
                  ("fc_layer.1.running_var", model.fc_layer[1].running_var),
                  ("layer3.5.conv2.weight", model.backbone.layer3[5].conv2.weight), ("fc.bias", model.head.bias)]
    for key, tensor in pairs:
        torch.testing.assert_close(tensor.detach(), state[key], rtol=0, atol=0, msg=key)


def _save_as_the_authors_did(state, path, container):
    obj = {"raw": state, "model": {"model": state, "epoch": 99},
           "module": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 99}}[container]
    torch.save(obj, path)


@pytest.mark.parametrize("name, container", [("convnext_tiny_ADNet_IN1K_NIH", "raw"),
                                             ("convnext_tiny_ADNet_IN1K_CheXpert", "model"),
                                             ("resnet50_ADNet_IN1K_NIH", "module")])
def test_released_file_loads_every_tensor_in_place(tmp_path, name, container):
    state = seeded_state_dict(_layout(name, MODEL_NAMES[name]), seed=11)
    path = tmp_path / f"{name}.pth.tar"
    _save_as_the_authors_did(state, path, container)
    model = adnet.create_model(name, pretrained_path=path)
    _check_named_places(model, state, model.style)
    back = ours_to_original(model.state_dict(), model.style)      # ours -> original is the identity on every tensor
    assert back.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0, msg=key)


def test_released_21_class_file_fine_tunes_and_serves_knn(tmp_path):
    """ALL (21 classes) -> a 14-class model: the classifier is re-initialised, everything else loads."""
    name = "convnext_tiny_ADNet_ALL"
    state = seeded_state_dict(_layout(name, 21), seed=3)
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"model": state}, path)
    model = adnet.create_model(name, num_classes=14, pretrained_path=path)
    assert model.head.weight.shape == (14, 768)
    torch.testing.assert_close(model.hmt.proj.weight.detach(), state["global_pool.channel_encode.0.weight"])
    with pytest.raises(CheckpointKeyError, match=r"head.weight: checkpoint \(21, 768\) vs model \(14, 768\)"):
        adnet.load_weights(build_model("convnext_tiny_ADNet_IN1K_NIH"), path)
    assert "not loaded" in adnet.load_weights(build_model("convnext_tiny_ADNet_IN1K_NIH"), path, ignore_head=True)[0]


def test_file_of_the_other_backbone_is_one_error_listing_keys(tmp_path):
    state = seeded_state_dict(_layout("resnet50_ADNet_IN1K_NIH", 14), seed=1)
    path = tmp_path / "resnet50_ADNet_IN1K_NIH.pth.tar"
    torch.save(state, path)
    model = build_model("convnext_tiny_ADNet_IN1K_NIH")
    before = state_snapshot(model)
    with pytest.raises(CheckpointKeyError) as err:
        adnet.load_weights(model, path)
    message = str(err.value)
    assert message.startswith(f"{path} does not match convnext_tiny ADNet")
    assert "layer1.0.conv1.weight" in message and "backbone.stem.0.weight" in message
    assert_unchanged(model, before)                                # nothing loaded partially


def _ham_checkpoint(path):
    """A released HAM model (another method): every key is unmatched."""
    ham = Path(__file__).parents[2] / "ham" / "tests" / "layouts" / "ham_resnet50_ds8.keys.json.gz"
    torch.save({f"module.{k}": v for k, v in seeded_state_dict(read_layout(ham)).items()}, path)


def _truncated(path):
    save_truncated(tiny_model().state_dict(), path)


def _pickled_object(path):
    save_with_pickled_object(tiny_model().state_dict(), path)


@pytest.mark.parametrize("make, expected", [(_ham_checkpoint, r"(?s)does not match .*no rule maps \(350\): model\.conv1"),
                                            (_truncated, "not a complete PyTorch checkpoint"),
                                            (_pickled_object, "holds pickled Python objects")])
def test_bad_files_are_one_error_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "downloaded.pth.tar"
    make(path)
    model = tiny_model()
    before = state_snapshot(model)
    with pytest.raises(CheckpointKeyError, match=expected) as err:
        adnet.load_weights(model, path)
    assert str(path) in str(err.value).splitlines()[0]
    if make is not _ham_checkpoint:
        assert "\n" not in str(err.value)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name, config", [("convnext_tiny_ADNet_IN1K_NIH", "nih_convnext"),
                                          ("resnet50_ADNet_ALL_MIMIC", "all_mimic_resnet50"),
                                          ("convnext_tiny_ADNet_ALL_NIH", "all_nih_convnext")])
def test_released_file_finds_its_setting_config(name, config):
    """adnet.test / make eval-authors-adnet without -cfg: the config whose model.name is the file's name."""
    from adnet.evaluate import release_config
    assert release_config(f"/weights/{name}.pth.tar").stem == config


def test_unknown_released_name_asks_for_a_config(tmp_path, capsys):
    from adnet import test as adnet_test
    path = tmp_path / "my_adnet.pth.tar"
    torch.save({}, path)
    with pytest.raises(SystemExit) as exit_info:
        adnet_test.main(["--weights", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no setting config for a released file named 'my_adnet'" in err and "pass -cfg CONFIG" in err
