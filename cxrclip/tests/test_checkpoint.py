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


def released_layout_tiny_swin() -> dict[str, tuple[tuple[int, ...], str | None]]:
    """The key layout a transformers-4.x CXR-CLIP (Swin + BERT) saves, written out by hand for the TINY configs:
    {4.x key: (shape, the key it must land on in our model, or None for a buffer that is dropped)}."""
    swin, bert = "image_encoder.image_encoder.", "text_encoder.text_encoder."
    ours_swin, ours_bert = "image_encoder.swin.", "text_encoder.bert."
    layout = {f"{swin}embeddings.patch_embeddings.projection.weight": ((16, 3, 4, 4), None),
              f"{swin}embeddings.patch_embeddings.projection.bias": ((16,), None),
              f"{swin}embeddings.norm.weight": ((16,), None), f"{swin}embeddings.norm.bias": ((16,), None),
              f"{swin}encoder.layers.0.downsample.reduction.weight": ((32, 64), None),
              f"{swin}encoder.layers.0.downsample.norm.weight": ((64,), None),
              f"{swin}encoder.layers.0.downsample.norm.bias": ((64,), None),
              f"{swin}layernorm.weight": ((32,), None), f"{swin}layernorm.bias": ((32,), None)}
    layout = {k: (shape, ours_swin + k.removeprefix(swin)) for k, (shape, _) in layout.items()}
    for stage, (dim, heads) in enumerate([(16, 1), (32, 2)]):
        block = f"encoder.layers.{stage}.blocks.0."
        for v4, v5, shape in [("layernorm_before", "layernorm_before", (dim,)),
                              ("attention.self.query", "attention.q_proj", (dim, dim)),
                              ("attention.self.key", "attention.k_proj", (dim, dim)),
                              ("attention.self.value", "attention.v_proj", (dim, dim)),
                              ("attention.output.dense", "attention.o_proj", (dim, dim)),
                              ("layernorm_after", "layernorm_after", (dim,)),
                              ("intermediate.dense", "mlp.fc1", (4 * dim, dim)),
                              ("output.dense", "mlp.fc2", (dim, 4 * dim))]:
            layout[f"{swin}{block}{v4}.weight"] = (shape, f"{ours_swin}{block}{v5}.weight")
            layout[f"{swin}{block}{v4}.bias"] = ((shape[0],), f"{ours_swin}{block}{v5}.bias")
        layout[f"{swin}{block}attention.self.relative_position_bias_table"] = (
            (49, heads), f"{ours_swin}{block}attention.relative_position_bias.relative_position_bias_table")
        layout[f"{swin}{block}attention.self.relative_position_index"] = ((16, 16), None)  # a 4.x buffer
    bert_keys = {"embeddings.word_embeddings.weight": (64, 32), "embeddings.position_embeddings.weight": (512, 32),
                 "embeddings.token_type_embeddings.weight": (2, 32), "embeddings.LayerNorm.weight": (32,),
                 "embeddings.LayerNorm.bias": (32,), "pooler.dense.weight": (32, 32), "pooler.dense.bias": (32,)}
    for name, shape in [("attention.self.query", (32, 32)), ("attention.self.key", (32, 32)),
                        ("attention.self.value", (32, 32)), ("attention.output.dense", (32, 32)),
                        ("attention.output.LayerNorm", (32,)), ("intermediate.dense", (64, 32)),
                        ("output.dense", (32, 64)), ("output.LayerNorm", (32,))]:
        bert_keys[f"encoder.layer.0.{name}.weight"] = shape
        bert_keys[f"encoder.layer.0.{name}.bias"] = (shape[0],)
    layout.update({bert + k: (shape, ours_bert + k) for k, shape in bert_keys.items()})
    layout[f"{bert}embeddings.position_ids"] = ((1, 512), None)  # saved by older transformers, recomputed now
    for side, dim in (("image", 32), ("text", 32)):
        layout[f"{side}_projection.projection.weight"] = ((16, dim), f"{side}_projection.weight")
        layout[f"{side}_projection.projection.bias"] = ((16,), f"{side}_projection.bias")
    layout["logit_scale"] = ((), "logit_scale")
    return layout


def test_released_transformers4_swin_layout_loads(tmp_path):
    """A state dict in the released files' (transformers 4.x) names, built by hand, loads on the installed
    transformers with every tensor where it belongs; buffers 4.x saved are dropped."""
    torch.manual_seed(0)
    layout = released_layout_tiny_swin()
    state = {k: (torch.arange(shape[0] * shape[1]).view(shape) if k.endswith(("_index", "position_ids"))
                 else torch.randn(shape)) for k, (shape, _) in layout.items()}
    path = tmp_path / "swint_m.tar"
    torch.save({"model": state, "epoch": 14}, path)
    model = tiny("swin")
    load_weights(model, path)
    ours = model.state_dict()
    for key, (_, target) in layout.items():
        if target is not None:
            torch.testing.assert_close(ours[target], state[key], msg=f"{key} -> {target}")
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), torch.tensor([[1, 5, 2]]), torch.ones(1, 3, dtype=torch.long))
    # and our own export writes that same layout (with 4.x's relative_position_index values)
    exported = to_original(tiny("swin").state_dict())
    assert set(exported) == set(layout) - {"text_encoder.text_encoder.embeddings.position_ids"}
    index = exported["image_encoder.image_encoder.encoder.layers.0.blocks.0.attention.self.relative_position_index"]
    buffers = dict(model.named_buffers())
    installed = buffers.get("image_encoder.swin.encoder.layers.0.blocks.0.attention.relative_position_bias."
                            "relative_position_index",
                            buffers.get("image_encoder.swin.encoder.layers.0.blocks.0.attention.self."
                                        "relative_position_index"))
    assert torch.equal(index.flatten(), installed.flatten())


class PickledConfig:
    """Stands in for the omegaconf object the released files carry."""


def test_pickled_config_needs_explicit_trust(tmp_path):
    path = tmp_path / "pickled.tar"
    torch.save({"model": tiny("resnet18").state_dict(), "config": PickledConfig()}, path)
    with pytest.raises(RuntimeError, match="--trust-checkpoint"):
        load_weights(tiny("resnet18"), path)
    load_weights(tiny("resnet18"), path, trust_pickle=True)
