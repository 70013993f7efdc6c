"""Released checkpoints in the original key layout load into our model; misfits are named."""
from __future__ import annotations

import pytest
import torch

from cxrclip.checkpoint import load_weights, to_original
from cxrclip.model import CXRClip, ImageEncoderConfig, ModelConfig, TextEncoderConfig

TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
TINY_SWIN = dict(image_size=64, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)


def tiny(image):
    return CXRClip(ModelConfig(image=ImageEncoderConfig(name=image, swin=TINY_SWIN),
                               text=TextEncoderConfig(bert=TINY_BERT), projection_dim=16))


@pytest.mark.parametrize("image, prefix", [("resnet18", "image_encoder.resnet."),
                                           ("swin", "image_encoder.image_encoder.")])
def test_original_layout_round_trip(tmp_path, image, prefix):
    torch.manual_seed(0)
    source = tiny(image)
    original = to_original(source.state_dict())
    assert any(k.startswith(prefix) for k in original)
    assert any(k.startswith("text_encoder.text_encoder.") for k in original)
    assert "image_projection.projection.weight" in original and "logit_scale" in original
    path = tmp_path / "released.tar"
    torch.save({"model": original, "epoch": 3}, path)
    target = tiny(image)
    load_weights(target, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_misfit_names_the_keys(tmp_path):
    state = to_original(tiny("resnet18").state_dict())
    state.pop("logit_scale")
    state["text_encoder.text_encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.tar"
    torch.save({"model": state}, path)
    with pytest.raises(RuntimeError, match=r"missing keys \['logit_scale'\].*extra.weight"):
        load_weights(tiny("resnet18"), path)


class PickledConfig:
    """Stands in for the omegaconf object the released files carry."""


def test_pickled_config_needs_explicit_trust(tmp_path):
    path = tmp_path / "pickled.tar"
    torch.save({"model": tiny("resnet18").state_dict(), "config": PickledConfig()}, path)
    with pytest.raises(RuntimeError, match="--trust-checkpoint"):
        load_weights(tiny("resnet18"), path)
    load_weights(tiny("resnet18"), path, trust_pickle=True)
