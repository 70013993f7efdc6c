"""Architecture facts of the spec's section 1: parameter count, output shapes, stride table, CAMs."""
import math

import pytest
import torch

from ham.model import HAM, STRIDE_DILATION_TABLE, Backbone, FABlock, count_parameters, lse_pool, refine_cams


@pytest.fixture(scope="module")
def ham50():
    torch.manual_seed(0)
    return HAM(num_classes=14, backbone="resnet50").eval()


def test_parameter_count_resnet50_14_classes(ham50):
    assert count_parameters(ham50) == 47_440_460


def test_output_shapes_at_128(ham50):
    with torch.no_grad():
        out = ham50(torch.randn(1, 3, 128, 128))
    shapes = [tuple(t.shape) for t in out]
    assert shapes == [(1, 1), (1, 14), (1, 1, 128, 128), (1, 14, 128, 128), (1, 1, 16, 16), (1, 14, 16, 16)]
    assert float(out.refined_cls.min()) >= 0 and float(out.refined_cls.max()) <= 1
    assert float(out.raw_cls.min()) >= 0  # ReLU


def test_geometry_and_macs_at_512():
    """512 input, ds 8 -> 2048x64x64 backbone maps and ~197 GMAC (counted on the meta device: no memory)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = HAM()
        x = torch.empty(1, 3, 512, 512)
        assert tuple(model.backbone(x).shape) == (1, 2048, 64, 64)
        with FlopCounterMode(display=False) as counter:
            feats = model.features(x)
    assert tuple(feats.shape) == (1, 512, 64, 64)
    assert abs(counter.get_total_flops() / 2e9 - 197) < 2


@pytest.mark.parametrize("pool,ds", sorted(STRIDE_DILATION_TABLE))
def test_stride_dilation_table(pool, ds):
    strides, dilations = STRIDE_DILATION_TABLE[(pool, ds)]
    for name in ("resnet18", "resnet50"):
        with torch.device("meta"):  # shapes only: no weights initialised, no memory
            bb = Backbone(name, using_pooling=pool, downsampling=ds)
            assert bb(torch.empty(1, 3, 64, 64)).shape[-1] == 64 // ds
        for layer, s, d in zip((bb.layer1, bb.layer2, bb.layer3, bb.layer4), strides, dilations):
            for j, block in enumerate(layer):
                conv = block.conv2
                assert conv.dilation == (d, d) and conv.padding == (d, d)  # every block, first included
                first = block.conv2 if name == "resnet50" else block.conv1
                assert first.stride == ((s, s) if j == 0 else (1, 1))


def test_no_dilation_switch():
    bb = Backbone("resnet50", using_dilation=False)
    assert all(b.conv2.dilation == (1, 1) for b in bb.layer4)


def test_lse_pool_limits():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    assert torch.allclose(lse_pool(x, r=1e-4), x.mean(dim=(2, 3)), atol=1e-3)   # r -> 0: mean
    assert torch.allclose(lse_pool(x, r=1e4), x.amax(dim=(2, 3)), atol=1e-3)    # r -> inf: max
    v = lse_pool(x, 6.0)
    ref = (torch.logsumexp(6 * x.flatten(2), -1) - math.log(25)) / 6
    assert torch.allclose(v, ref)


def test_refine_cams_normalisation():
    cams = torch.zeros(1, 2, 4, 4)
    cams[0, 0, 1, 1] = 3.0                       # one peak; class 1 constant (zero range)
    r = refine_cams(cams, (8, 8))
    assert r.shape == (1, 2, 8, 8)
    assert r[0, 0].max() > 0.99 and r[0, 0].min() < 1e-10
    assert torch.allclose(r[0, 1], torch.sigmoid(torch.tensor(-40.0)).expand(8, 8))  # (0 - 0) / 1e-5 = 0


def test_cam_weights_detached():
    """Attention losses update the features only: no gradient reaches the heads' weights through the CAMs."""
    torch.manual_seed(0)
    model = HAM(num_classes=3, backbone="resnet18").train()
    out = model(torch.randn(2, 3, 32, 32))
    (out.raw_cls.sum() + out.raw_ano.sum() + out.refined_cls.sum()).backward()
    assert model.cls_fc.weight.grad is None and model.ano_fc.weight.grad is None
    assert model.head[0].weight.grad is not None and model.head[0].weight.grad.abs().sum() > 0


def test_cam_is_gradcam_with_lse():
    """With LSE pooling the CAM equals Grad-CAM up to a positive factor (spec section 1) at r -> 0 (mean)."""
    torch.manual_seed(0)
    feats = torch.rand(1, 4, 3, 3, requires_grad=True)
    w = torch.randn(1, 4)
    logit = lse_pool(feats, 1e-6) @ w.t()
    grads, = torch.autograd.grad(logit.sum(), feats)
    alpha = grads.sum(dim=(2, 3))                    # Grad-CAM channel weights
    assert torch.allclose(alpha, w, atol=1e-4)       # = w_k / HW * HW


def test_fablock_identity_at_init():
    block = FABlock(16).eval()
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(block(x), x)                   # gamma = 0
    block.gamma.data.fill_(1.0)
    assert not torch.equal(block(x), x)


def test_saved_activations_per_512_image_back_the_memory_estimate():
    """README's GPU-memory estimate: the tensors autograd keeps for backward of one 512 px image (meta device,
    fp32) sum to ~1.7 GiB; the ex_cls path of one box-supervised image adds ~70 MiB (14 maps at 512x512)."""
    from ham.losses import ex_cls_loss
    saved = {"bytes": 0}

    def pack(t):
        saved["bytes"] += t.numel() * t.element_size()
        return t

    with torch.device("meta"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model = HAM().train()
        out = model(torch.empty(1, 3, 512, 512), refine=False)
        forward = saved["bytes"]
        ones = torch.ones(1, 14)
        ex_cls_loss(refine_cams(out.raw_cls, (512, 512)), torch.ones(1, 14, 512, 512), torch.ones(1), ones)
    assert forward / 2**30 == pytest.approx(1.71, abs=0.02)
    assert (saved["bytes"] - forward) / 2**20 == pytest.approx(70, abs=2)


def test_build_model_offline_download_is_one_line_naming_pretrained_path(monkeypatch, tmp_path):
    """No network and nothing cached: the error names model.pretrained_path (the CLI prints it as one line)."""
    import urllib.error

    from ham.config import ModelConfig, build_model
    from shared.weights import PretrainedWeightsError

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = ModelConfig(backbone="resnet18", pretrained=True, fa_channels=8, head_channels=8)
    with pytest.raises(PretrainedWeightsError, match=r"torchvision 'resnet18'.*--set model\.pretrained_path=FILE"):
        build_model(cfg, num_classes=2)
    cfg.pretrained_path = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="model.pretrained_path: file not found"):
        build_model(cfg, num_classes=2)
