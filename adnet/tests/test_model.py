"""Architecture facts of spec section 1: parameter counts, shapes, GMACs, HMT, decoder math, input checks."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import adnet
from adnet.model import ADNet, MODEL_NAMES, DecoderLayer, HarmonicMagnitudeTransform, build_model, parse_model_name

from .conftest import tiny_model


def meta_model(name: str, num_classes: int | None = None):
    with torch.device("meta"):  # no weight init: counting and shape inference cost nothing
        return build_model(name, num_classes).eval()


@pytest.mark.parametrize("name, classes, expected", [
    ("convnext_tiny_ADNet_IN1K_NIH", None, 31_365_998),
    ("convnext_tiny_ADNet_IN1K", None, 32_124_232),
    ("resnet50_ADNet_IN1K_NIH", None, 39_147_598),
    ("resnet50_ADNet_IN1K", None, 41_167_912),
    ("resnet50_ADNet_IN1K", 14, 39_147_598),       # num_classes override
])
def test_parameter_counts(name, classes, expected):
    assert sum(p.numel() for p in meta_model(name, classes).parameters()) == expected


def test_convnext_part_counts():
    parts = meta_model("convnext_tiny_ADNet_IN1K_NIH").parameter_groups()
    assert parts["decoder"] == 2_621_952
    assert parts["ad1"] == 2_092_032 and parts["ad2"] == 529_920
    assert parts["fc_layer"] == 147_456
    assert parts["hmt"] == 765_696
    assert parts["head"] == 10_766


def test_registry_all_16_names():
    assert len(MODEL_NAMES) == 16
    expected = {"IN1K": 1000, "IN1K_NIH": 14, "IN1K_MIMIC": 14, "IN1K_CheXpert": 5,
                "ALL": 21, "ALL_NIH": 14, "ALL_MIMIC": 14, "ALL_CheXpert": 5}
    for backbone in ("convnext_tiny", "resnet50"):
        for suffix, k in expected.items():
            name = f"{backbone}_ADNet_{suffix}"
            with torch.device("meta"):
                model = adnet.create_model(name)
            assert model.head.out_features == k, name
            assert model.backbone_name == backbone
    assert parse_model_name("convnext_atto_ADNet") == ("convnext_atto", 14)
    with pytest.raises(ValueError, match="unknown ADNet model"):
        parse_model_name("convnext_tiny_ADNet_IN22K")


@pytest.mark.parametrize("size", [448, 224])
def test_shapes_convnext(size):
    parts = meta_model("convnext_tiny_ADNet_IN1K_NIH").forward_parts(torch.empty(2, 3, size, size, device="meta"))
    s8, s16 = size // 8, size // 16
    assert parts["ad1"].shape == (2, s16 * s16, 384)
    assert parts["ad2"].shape == (2, s8 * s8, 192)
    assert parts["fc_layer"].shape == (2, 768, s8, s8)
    assert parts["dft"].shape == (2, 768, 15, 15)
    assert parts["hmt"].shape == (2, 768)
    assert parts["logits"].shape == (2, 14)
    if size == 448:  # the numbers written in the spec
        assert parts["ad1"].shape[1] == 784 and parts["ad2"].shape[1] == 3136 and s8 == 56


def test_shapes_resnet_448():
    parts = meta_model("resnet50_ADNet_IN1K_NIH").forward_parts(torch.empty(1, 3, 448, 448, device="meta"))
    assert parts["ad1"].shape == (1, 784, 1024)
    assert parts["ad2"].shape == (1, 3136, 512)
    assert parts["fc_layer"].shape == (1, 2048, 56, 56)
    assert parts["dft"].shape == (1, 2048, 15, 15)
    assert parts["hmt"].shape == (1, 2048) and parts["logits"].shape == (1, 14)


@pytest.mark.parametrize("name, size, gmacs", [
    ("convnext_tiny_ADNet_IN1K_NIH", 448, 21.99), ("convnext_tiny_ADNet_IN1K_NIH", 416, 18.84),
    ("convnext_tiny_ADNet_IN1K_NIH", 256, 6.95), ("resnet50_ADNet_IN1K_NIH", 448, 32.54)])
def test_gmacs_match_spec(name, size, gmacs):
    # spec: fvcore counts (FFT not counted; fvcore also counts norms, torch's counter does not) -> within 1 %
    model = meta_model(name)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_hmt_dc_is_abs_mean():
    torch.manual_seed(0)
    z = torch.randn(3, 8, 30, 34) + 0.3
    hmt = HarmonicMagnitudeTransform(8, dft_size=15)
    spec = hmt.spectrum(z)
    assert spec.shape == (3, 8, 15, 15)
    torch.testing.assert_close(spec[:, :, 0, 0], z.mean(dim=(2, 3)).abs(), rtol=1e-5, atol=1e-6)
    # the crop holds the non-negative frequency corner of rfft2(norm="forward")
    torch.testing.assert_close(spec, torch.fft.rfft2(z, norm="forward")[..., :15, :15].abs())


def test_hmt_runs_fp32_under_autocast():
    hmt = HarmonicMagnitudeTransform(4, dft_size=5).eval()
    z = torch.randn(2, 4, 12, 12).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert hmt.spectrum(z).dtype == torch.float32
        assert hmt(z).dtype == torch.float32


def test_hmt_pool_is_filter_bn_residual():
    torch.manual_seed(1)
    hmt = HarmonicMagnitudeTransform(4, dft_size=5).eval()
    for bn in (hmt.bn1, hmt.bn2):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    m = torch.rand(2, 4, 5, 5)
    s = (m * hmt.filter.weight[:, 0]).sum(dim=(2, 3))                       # sum_uv E_c[u,v] M_c[u,v]
    s = (s - hmt.bn1.running_mean) / torch.sqrt(hmt.bn1.running_var + hmt.bn1.eps) * hmt.bn1.weight + hmt.bn1.bias
    ws = s @ hmt.proj.weight[:, :, 0, 0].T
    ws = (ws - hmt.bn2.running_mean) / torch.sqrt(hmt.bn2.running_var + hmt.bn2.eps) * hmt.bn2.weight + hmt.bn2.bias
    torch.testing.assert_close(hmt.pool(m), s + ws, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("style", ["convnext", "resnet"])
def test_decoder_layer_matches_explicit_attention(style):
    torch.manual_seed(0)
    layer = DecoderLayer(dim=64, kv_dim=96, num_heads=2, mlp_ratio=2, style=style).eval()
    q_map, kv_map = torch.randn(2, 64, 4, 6), torch.randn(2, 96, 2, 3)
    out = layer(q_map, kv_map)
    assert out.shape == (2, 24, 64)
    q = q_map.flatten(2).transpose(1, 2)
    kv = kv_map.flatten(2).transpose(1, 2)
    qn, kvn = layer.norm_q(q), layer.norm_kv(kv)
    if style == "convnext":
        Q, KV = qn @ layer.attn.q.weight.T, kvn @ layer.attn.kv.weight.T
    else:  # grouped 1x1 conv, groups=2: each output half sees one input half
        def grouped(x, w):
            half_in, half_out = x.shape[-1] // 2, w.shape[0] // 2
            return torch.cat([x[..., :half_in] @ w[:half_out, :, 0, 0].T, x[..., half_in:] @ w[half_out:, :, 0, 0].T], -1)
        Q, KV = grouped(qn, layer.attn.q.weight), grouped(kvn, layer.attn.kv.weight)
    K, V = KV[..., :64], KV[..., 64:]
    heads = lambda t: t.reshape(2, t.shape[1], 2, 32).transpose(1, 2)  # noqa: E731
    att = torch.softmax(heads(Q) @ heads(K).transpose(-1, -2) / math.sqrt(32), dim=-1) @ heads(V)
    x = q + layer.attn.proj(att.transpose(1, 2).reshape(2, 24, 64))
    y = layer.mlp(layer.norm_mlp(x).transpose(1, 2).reshape(2, 64, 4, 6)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, x + y, rtol=1e-4, atol=1e-5)


def test_input_size_errors_and_non_square():
    model = tiny_model().eval()               # dft_size 7 -> minimum 96 px
    assert model.min_input_size == 96
    with pytest.raises(ValueError, match="at least 96x96"):
        model(torch.randn(1, 3, 95, 128))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 96, 96))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 128))   # non-square is accepted
    assert out.shape == (2, 14) and torch.isfinite(out).all()
    full = meta_model("convnext_tiny_ADNet_IN1K_NIH")
    assert full.min_input_size == 224
    with pytest.raises(ValueError, match="at least 224x224"):
        full(torch.empty(1, 3, 223, 448, device="meta"))
    assert full.forward_parts(torch.empty(1, 3, 224, 320, device="meta"))["dft"].shape == (1, 768, 15, 15)


def test_tiny_forward_api_consistent():
    model = tiny_model("resnet").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        parts = model.forward_parts(x)
        torch.testing.assert_close(model(x), parts["logits"])
        torch.testing.assert_close(model.forward_embedding(x), parts["hmt"])  # resnet: no LayerNorm
    cmodel = tiny_model("convnext").eval()
    with torch.no_grad():
        emb = cmodel.forward_embedding(x)
    assert emb.shape == (2, 128)
    torch.testing.assert_close(emb.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)  # LayerNorm(HMT out)
    cmodel.reset_classifier(5)
    assert cmodel(x).shape == (2, 5)


def test_memory_estimate_counts_activations_not_weights():
    from adnet.memory import saved_bytes_per_image
    model = tiny_model()
    small, large = (saved_bytes_per_image(model, size, 14) for size in (96, 192))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert 3.0 < large / small < 4.6           # activations grow with the image area (4x), weights do not
    assert large - small > 2 * params          # the difference is activations, weights are excluded


@pytest.mark.parametrize("style", ["convnext", "resnet"])
def test_pretrained_backbone_weights_survive_construction(tmp_path, style):
    """pretrained_backbone=True (timm, here from a local file): the backbone keeps those weights; the ResNet-style
    re-initialisation touches only the added parts."""
    from .conftest import TINY_CONVNEXT, TINY_RESNET
    spec = TINY_CONVNEXT if style == "convnext" else TINY_RESNET
    torch.manual_seed(11)
    source = timm.create_model(spec["backbone"], num_classes=1000, **spec["backbone_kwargs"])
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.123)          # far from any init distribution
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    kwargs = dict(spec["backbone_kwargs"], pretrained_cfg_overlay=dict(file=str(path)))
    model = ADNet(spec["backbone"], num_classes=14, head_dim=spec["head_dim"], dft_size=spec["dft_size"],
                  backbone_kwargs=kwargs, pretrained_backbone=True)
    reference = source.state_dict()
    own = model.backbone.state_dict()
    assert own
    for k, v in own.items():
        torch.testing.assert_close(v, reference[k], msg=k)
    if style == "resnet":   # the added parts were re-initialised (conv biases zero, BN weight one)
        assert torch.all(model.fc_layer[1].weight == 1)
