"""AG-CNN architecture: parameter counts of spec section 5, shapes, pooling, the seed fusion-FC file."""
import re

import pytest
import timm
import torch

from agcnn.model import AGCNN, Branch, count_parameters
from agcnn.weights import load_backbone, load_seed_fusion_fc


def test_resnet50_branch_fc15_count():
    assert count_parameters(Branch("resnet50", num_classes=15)) == 23_538_767


def test_resnet50_agcnn_total_count():
    model = AGCNN("resnet50", num_classes=15)
    assert count_parameters(model) == 47_138_989
    assert model.fusion.in_features == 4096


def test_densenet121_branch_count_is_for_14_classes():
    # spec: 6,968,206 = 6,953,856 (backbone) + 1024 * 14 + 14 -> the DenseNet count is for C = 14
    assert count_parameters(Branch("densenet121", num_classes=14)) == 6_968_206
    assert count_parameters(Branch("densenet121", num_classes=15)) == 6_968_206 + 1025


def test_branch_shapes_resnet50_224():
    branch = Branch("resnet50", num_classes=15).eval()
    with torch.no_grad():
        out = branch(torch.randn(1, 3, 224, 224))
    assert out.features.shape == (1, 2048, 7, 7)
    assert out.pooled.shape == (1, 2048)
    assert out.logits.shape == (1, 15)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pooling_switch(pool):
    branch = Branch("resnet18", num_classes=3, pool=pool).eval()
    with torch.no_grad():
        out = branch(torch.randn(2, 3, 64, 64))
    ref = out.features.amax((2, 3)) if pool == "max" else out.features.mean((2, 3))
    torch.testing.assert_close(out.pooled, ref)


def test_agcnn_forward_small():
    model = AGCNN("resnet18", num_classes=14, crop_size=64).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    for k in ("global", "local", "fusion"):
        assert out[k].shape == (3, 14)
    assert out["crops"].shape == (3, 3, 64, 64)
    b = out["boxes"]
    assert ((b[:, 0] >= 0) & (b[:, 0] <= b[:, 2]) & (b[:, 2] < 64)).all()
    assert ((b[:, 1] >= 0) & (b[:, 1] <= b[:, 3]) & (b[:, 3] < 64)).all()
    assert set(model(x, branches=("global",))) == {"global"}


def test_small_densenet_via_same_code():
    model = AGCNN("densenet121", num_classes=15, crop_size=64,
                  backbone_kwargs={"growth_rate": 8, "block_config": (1, 1, 1, 1)})
    out = model(torch.randn(2, 3, 64, 64))
    assert out["fusion"].shape == (2, 15)
    assert model.fusion.in_features == 2 * model.global_branch.num_features


def test_seed_fusion_fc_loads_into_densenet121_c14(tmp_path):
    # 2048 = 1024 + 1024: DenseNet-121's concatenated pooled vectors; a ResNet-50 AG-CNN would need 4096
    fc = {"fc.weight": torch.randn(14, 2048), "fc.bias": torch.randn(14)}
    path = tmp_path / "fusion.pkl"
    torch.save(fc, path)
    model = AGCNN("densenet121", num_classes=14)
    load_seed_fusion_fc(model, path)
    torch.testing.assert_close(model.fusion.weight, fc["fc.weight"])
    torch.testing.assert_close(model.fusion.bias, fc["fc.bias"])
    with pytest.raises(ValueError, match=r"\[14, 2048\].*densenet121"):
        load_seed_fusion_fc(torch.nn.Linear(4096, 15), path)  # a ResNet-50 C=15 fusion head
    torch.save({"fc.weight": torch.randn(14, 2048)}, tmp_path / "bad.pkl")
    with pytest.raises(ValueError, match="fc.weight and fc.bias"):
        load_seed_fusion_fc(model, tmp_path / "bad.pkl")
    with pytest.raises(FileNotFoundError):
        load_seed_fusion_fc(model, tmp_path / "absent.pkl")


def test_backbone_weights_from_local_file(tmp_path):
    src = Branch("resnet18", num_classes=1000)
    sd = {**src.backbone.state_dict(), "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(sd, tmp_path / "r18.pth")
    dst = Branch("resnet18", num_classes=15)
    assert load_backbone(dst, tmp_path / "r18.pth") == []
    torch.testing.assert_close(dst.backbone.conv1.weight, src.backbone.conv1.weight)
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="no key matches"):
        load_backbone(dst, tmp_path / "junk.pth")



def _legacy_densenet_name(key: str) -> str:
    """torchvision's pre-rename DenseNet naming (densenet121-a639ec97.pth): denselayerN.norm1 -> norm.1 etc."""
    return re.sub(r"(denselayer\d+\.)(norm|relu|conv)([12])\.", r"\1\2.\3.", key)


def test_torchvision_densenet121_with_legacy_names_loads_completely(tmp_path):
    import torchvision

    src = torchvision.models.densenet121(weights=None)
    with torch.no_grad():  # random running statistics too, so that buffers are checked, not just init values
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    sd = {_legacy_densenet_name(k): v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in sd  # really the legacy form, as the old file
    torch.save(sd, tmp_path / "densenet121-legacy.pth")
    dst = Branch("densenet121", num_classes=15)
    skipped = load_backbone(dst, tmp_path / "densenet121-legacy.pth")
    assert skipped and all(k.endswith("num_batches_tracked") for k in skipped)  # the old file has no counters
    want = {k: v for k, v in src.state_dict().items() if not k.startswith("classifier.")}
    got = dst.backbone.state_dict()
    assert len(want) == len(got) == 725
    for k, v in want.items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def test_truncated_backbone_file_is_an_error_naming_the_missing_keys(tmp_path):
    src = Branch("resnet18", num_classes=1000).backbone.state_dict()
    keys = list(src)
    torch.save({k: src[k] for k in keys[:-20]}, tmp_path / "cut.pth")
    dst = Branch("resnet18", num_classes=15)
    before = {k: v.clone() for k, v in dst.backbone.state_dict().items()}
    n_missing = sum(not k.endswith("num_batches_tracked") for k in keys[-20:])
    with pytest.raises(ValueError, match=rf"{n_missing} of {len(keys)} tensors missing.*layer4\.1\."):
        load_backbone(dst, tmp_path / "cut.pth")
    for k, v in dst.backbone.state_dict().items():  # nothing half-loaded
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_torchvision_and_timm_backbones_share_key_names(name):
    """Why no other key map is needed: torchvision's current names are timm's (only the classifier differs)."""
    import torchvision

    with torch.device("meta"):
        tv = set(getattr(torchvision.models, name)(weights=None).state_dict())
        tm = set(timm.create_model(name, pretrained=False, num_classes=0, global_pool="").state_dict())
    assert tm <= tv and {k.split(".")[0] for k in tv - tm} == {"classifier" if name == "densenet121" else "fc"}


@pytest.mark.parametrize("backbone, classes, gmac", [("resnet50", 15, 4.09), ("densenet121", 14, 2.83)])
def test_branch_gmac_at_224(backbone, classes, gmac):
    """Spec section 5: 4.09 GMAC (ResNet-50 branch), 2.83 GMAC (DenseNet-121 branch) per 224 px image."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        branch = Branch(backbone, num_classes=classes)
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        branch(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmac, abs=0.005)


def test_offline_imagenet_download_is_one_line_naming_pretrained_path(monkeypatch, capsys):
    """No network: timm's failed download ends as `prog: error: ...` naming model.pretrained_path."""
    import urllib.error

    import timm.models._builder as builder

    from agcnn.config import Config
    from agcnn.train import build_model
    from shared.cli import run_cli
    from shared.testing import pretend_online

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(builder, "load_pretrained", no_network)
    pretend_online(monkeypatch)   # the download itself fails (offline, shared.weights stops before it)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.pretrained_path = "resnet18", True, None
    assert run_cli("python -m agcnn.train", lambda: build_model(cfg)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "timm 'resnet18.tv_in1k'" in err and "--set model.pretrained_path=FILE" in err and "URLError" in err


@pytest.mark.parametrize("backbone, tag, pretrained, expected", [
    ("resnet50", "tv_in1k", True, "resnet50.tv_in1k"),          # default: torchvision's ImageNet weights
    ("densenet121", "tv_in1k", True, "densenet121.tv_in1k"),
    ("resnet50", "", True, "resnet50"),                         # switch back: timm's default tag
    ("resnet50", "tv_in1k", False, "resnet50"),                 # no download: the tag does not matter
    ("resnet50.a1_in1k", "tv_in1k", True, "resnet50.a1_in1k"),  # an explicit tag wins
])
def test_imagenet_weights_are_torchvision_by_default(backbone, tag, pretrained, expected):
    import timm

    from agcnn.config import Config
    from agcnn.train import timm_backbone
    m = Config().model
    assert m.pretrained_tag == "tv_in1k"
    m.backbone, m.pretrained_tag, m.pretrained = backbone, tag, pretrained
    assert timm_backbone(m) == expected
    # what timm downloads for that name (its config only, no download): "" gives timm's a1_in1k / ra_in1k
    timm_tag = timm.models.get_pretrained_cfg(expected).tag
    assert timm_tag == (expected.partition(".")[2] or {"resnet50": "a1_in1k", "densenet121": "ra_in1k"}[expected])
