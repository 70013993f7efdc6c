"""The original-checkpoint key map: round trip, container formats, clear errors on unmatched keys."""
from __future__ import annotations

import pytest
import timm
import torch

import adnet
from adnet.checkpoint import (CheckpointKeyError, extract_state_dict, load_weights, original_to_ours,
                              ours_to_original)
from adnet.model import build_model

from .conftest import tiny_model


def _perturbed(model):
    """Non-default values everywhere (BN statistics included) so a wrong mapping cannot pass by accident."""
    torch.manual_seed(123)
    out = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            out[k] = v + 3
        elif k.endswith("running_var"):
            out[k] = torch.rand_like(v) + 0.5
        else:
            out[k] = torch.randn_like(v)
    return out


def test_convnext_original_names_are_facebook_style():
    with torch.device("meta"):
        model = build_model("convnext_tiny_ADNet_IN1K_NIH")
    orig = ours_to_original(model.state_dict(), "convnext")
    backbone = {k for k in orig if k.startswith(("downsample_layers.", "stages."))}
    assert "downsample_layers.0.0.weight" in backbone and "downsample_layers.3.1.weight" in backbone
    assert "stages.2.8.pwconv1.weight" in backbone and "stages.3.2.gamma" in backbone
    assert {"norm.weight", "norm.bias", "head.weight", "head.bias"} <= set(orig)
    assert not any(k.startswith("backbone.") for k in orig)
    # independent check: timm's own Facebook->timm ConvNeXt converter lands on the same backbone names
    with torch.device("meta"):
        ref = timm.create_model("convnext_tiny", pretrained=False)
    fb = {k: v for k, v in orig.items() if k in backbone or k in ("norm.weight", "norm.bias")}
    fb.update({"head.weight": torch.empty(1000, 768, device="meta"), "head.bias": torch.empty(1000, device="meta")})
    converted = timm.models.convnext.checkpoint_filter_fn(fb, ref)
    ours_backbone = {k[len("backbone."):] for k in model.state_dict() if k.startswith("backbone.")}
    assert set(converted) - {"head.norm.weight", "head.norm.bias", "head.fc.weight", "head.fc.bias"} == ours_backbone


def test_resnet_original_names_are_timm():
    with torch.device("meta"):
        model = build_model("resnet50_ADNet_IN1K_NIH")
    orig = ours_to_original(model.state_dict(), "resnet")
    with torch.device("meta"):
        ref = set(timm.create_model("resnet50", pretrained=False).state_dict())  # conv1, bn1, layer1-4, fc
    assert ref <= set(orig)
    assert set(orig) - ref == {k for k in orig if k.startswith(("attn_decoder.", "fc_layer.", "global_pool."))}


@pytest.mark.parametrize("style, container", [("convnext", "raw"), ("convnext", "module"),
                                              ("resnet", "model"), ("resnet", "state_dict")])
def test_round_trip_through_original_layout(tmp_path, style, container):
    src = tiny_model(style, seed=1)
    state = _perturbed(src)
    src.load_state_dict(state)
    orig = ours_to_original(state, style)
    assert not any(k.startswith("backbone.") for k in orig)
    if container == "module":
        obj = {"state_dict": {f"module.{k}": v for k, v in orig.items()}, "epoch": 3}
    else:
        obj = orig if container == "raw" else {container: orig, "optimizer": {}}
    path = tmp_path / "convnext_tiny_ADNet_IN1K_NIH.pth.tar"
    torch.save(obj, path)
    dst = tiny_model(style, seed=2)
    assert load_weights(dst, path) == []
    for k, v in dst.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src.eval()(x))


def test_our_own_checkpoints_load_without_mapping_and_ema(tmp_path):
    src = tiny_model()
    state = _perturbed(src)
    path = tmp_path / "best.pt"
    torch.save({"model": state, "model_ema": {k: v * 0 if v.is_floating_point() else v for k, v in state.items()}},
               path)
    dst = tiny_model(seed=5)
    load_weights(dst, path)
    torch.testing.assert_close(dst.state_dict()["head.weight"], state["head.weight"])
    load_weights(dst, path, ema=True)
    assert dst.state_dict()["head.weight"].abs().sum() == 0
    with pytest.raises(CheckpointKeyError, match="no EMA weights"):
        extract_state_dict({"model": state}, ema=True)


def test_unmatched_keys_are_listed():
    model = tiny_model()
    orig = ours_to_original(_perturbed(model), "convnext")
    orig["dec.0.q.weight"] = orig.pop("attn_decoder.0.attn.q.weight")
    orig["something_else"] = torch.zeros(1)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointKeyError) as err:
        load_weights(model, orig)
    msg = str(err.value)
    assert "dec.0.q.weight" in msg and "something_else" in msg and "decoder.0.attn.q.weight" in msg
    for k, v in model.state_dict().items():                          # nothing loaded partially
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    assert "README" in msg
    # a user-supplied rename rule bridges other names without code changes
    del orig["something_else"]
    load_weights(tiny_model(), orig, extra_rules=[(r"^dec\.0\.q\.", "attn_decoder.0.attn.q.")])


def test_shape_mismatch_is_named():
    orig = ours_to_original(_perturbed(tiny_model()), "convnext")
    orig["global_pool.spatial_encode.0.weight"] = torch.zeros(3, 1, 7, 7)
    with pytest.raises(CheckpointKeyError, match="shape mismatches.*hmt.filter.weight"):
        load_weights(tiny_model(), orig)


def test_head_of_another_size_for_fine_tuning(tmp_path):
    pre = tiny_model(num_classes=21)                     # e.g. the 21-class ALL weights
    path = tmp_path / "ALL.pth.tar"
    torch.save({"model": ours_to_original(_perturbed(pre), "convnext")}, path)
    with pytest.raises(CheckpointKeyError, match="head.weight: checkpoint \\(21, 128\\) vs model \\(14, 128\\)"):
        load_weights(tiny_model(num_classes=14), path)
    model = tiny_model(num_classes=14)
    notes = load_weights(model, path, drop_head_if_mismatch=True)
    assert "head left freshly initialised" in notes[0]
    torch.testing.assert_close(model.state_dict()["hmt.proj.weight"], _perturbed(pre)["hmt.proj.weight"])


def test_create_model_pretrained_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not_there.pth.tar"):
        adnet.create_model("convnext_atto_ADNet", pretrained_path=tmp_path / "not_there.pth.tar",
                           head_dim=16, dft_size=7)
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointKeyError, match="bad.pth.tar"):
        load_weights(tiny_model(), bad)


@pytest.mark.parametrize("style", ["convnext", "resnet"])
def test_backbone_only_imagenet_weights(tmp_path, style):
    """model.backbone_weights: a timm state dict of the backbone (with its own classifier) fills the backbone only."""
    from .conftest import TINY_CONVNEXT, TINY_RESNET
    from adnet.checkpoint import load_backbone_weights
    spec = TINY_CONVNEXT if style == "convnext" else TINY_RESNET
    torch.manual_seed(7)
    imagenet = timm.create_model(spec["backbone"], num_classes=1000, **spec["backbone_kwargs"])
    path = tmp_path / "in1k.pth"
    torch.save(imagenet.state_dict(), path)
    model = tiny_model(style, seed=3)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    notes = load_backbone_weights(model, path)
    assert "deviation" in notes[0]
    reference = imagenet.state_dict()
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, reference[k], msg=k)
    for k, v in model.decoder.state_dict().items():
        torch.testing.assert_close(v, decoder_before[k], msg=k)
    # Facebook-style ConvNeXt names are accepted too
    if style == "convnext":
        fb = {k: v for k, v in ours_to_original({f"backbone.{k}": v for k, v in reference.items()}, style).items()
              if not k.startswith("backbone.")}
        torch.save({"model": fb}, path)
        other = tiny_model(style, seed=4)
        load_backbone_weights(other, path)
        for k, v in other.backbone.state_dict().items():
            torch.testing.assert_close(v, reference[k], msg=k)
    # another architecture's weights: one error naming the file and the unfilled keys
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointKeyError, match="in1k.pth.*backbone keys it does not fill"):
        load_backbone_weights(tiny_model(style), path)


def test_readme_rename_example():
    """The README's --rename / model.pretrained_rename example: other decoder / HMT names, bridged by three rules."""
    import re
    from shared.config import load_config
    from adnet.checkpoint import parse_rename_rules
    from adnet.config import ADNetConfig
    model = tiny_model(seed=5)
    expected = _perturbed(model)
    orig = ours_to_original(expected, "convnext")
    for old, new in [(r"^attn_decoder\.0\.", "dec1."), (r"^attn_decoder\.1\.", "dec2."),
                     (r"^global_pool\.", "fft_pool.")]:
        orig = {re.sub(old, new, k): v for k, v in orig.items()}
    with pytest.raises(CheckpointKeyError, match=r"(?s)no rule maps.*dec1\.norm1_q\.weight.*does not fill.*decoder\.0"):
        load_weights(tiny_model(seed=6), orig)
    cfg = load_config(ADNetConfig, None, ["model.pretrained_rename=['^dec1\\.=attn_decoder.0.',"
                                          "'^dec2\\.=attn_decoder.1.','^fft_pool\\.=global_pool.']"])
    other = tiny_model(seed=6)
    assert load_weights(other, orig, extra_rules=parse_rename_rules(cfg.model.pretrained_rename)) == []
    for k, v in other.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)
