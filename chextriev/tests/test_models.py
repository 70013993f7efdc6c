"""Parameter counts and shapes from the spec; unit properties of the CheXtriev models."""
from pathlib import Path

import pytest
import torch

from chextriev.models import ATHNet, GraphTransformer, ModelConfig, build_model, count_parameters
from chextriev.models.anaxnet import AnaXNet, DenseGCN, PygGCN
from chextriev.models.common import GatedResidual
from chextriev.models.graph_transformer import multi_level_embedding, xavier_bound
from shared.testing import pretend_online


def test_graph_transformer_parameter_counts():
    with torch.device("meta"):      # shapes only: instant
        assert count_parameters(GraphTransformer(abs_pos=True)) == 22_124_544
        assert count_parameters(GraphTransformer(abs_pos=False)) == 22_059_008
        # the faithful random edges are a buffer (never trained), the fixed ones a parameter
        assert count_parameters(GraphTransformer(abs_pos=True, edges="fixed_random")) == 22_124_544
        assert count_parameters(GraphTransformer(abs_pos=True, edges="learnable")) == 22_124_544 + 18 * 18 * 1024


def test_ath_parameter_count_and_shapes():
    model = ATHNet(32, 9)
    assert count_parameters(model) == 48_394
    out = model(torch.randn(2, 3, 256, 256))
    assert out["logits"].shape == (2, 9) and out["hash"].shape == (2, 32)
    with pytest.raises(ValueError, match="256"):
        model(torch.randn(2, 3, 224, 224))


def test_v6_trainable_parameters_and_outputs():
    cfg = ModelConfig(pretrained=False, name="graph_transformer", backbone="resnet50", abs_pos=True, edges="fixed_random",
                      residual_type=2)
    with torch.device("meta"):
        model = build_model(cfg)
    head = (2048 * 1024 + 1024) + (1024 * 1024 + 1024)
    n_train = count_parameters(model, trainable_only=True)
    assert n_train == 22_124_544 + head + 2048 + 1024 * 9 + 9       # + fc = LN + Linear(1024, 9)
    assert round(n_train / 1e6, 2) == 25.28                             # the spec's "V6 trainable ~25.28 M"
    small = ModelConfig(pretrained=False, name="graph_transformer", backbone="resnet18", dim=64, heads=2, dim_head=8, abs_pos=True,
                        edges="fixed_random", residual_type=2)
    out = build_model(small)(torch.randn(2, 18, 512))
    assert out["logits"].shape == (2, 9) and out["node_logits"].shape == (2, 18, 9)
    assert out["embedding"].shape == (2, 64)


def test_fixed_random_edges_are_xavier_buffer_never_trained():
    torch.manual_seed(0)
    gt = GraphTransformer(dim=32, heads=2, dim_head=8, edge_dim=32, edges="fixed_random")
    assert "edges" in dict(gt.named_buffers()) and "edges" not in dict(gt.named_parameters())
    bound = xavier_bound(18, 32)
    assert gt.edges.abs().max() <= bound and gt.edges.abs().max() > 0.9 * bound
    assert abs(xavier_bound() - 0.0128) < 1e-4
    learn = GraphTransformer(dim=32, heads=2, dim_head=8, edge_dim=32, edges="learnable")
    assert "edges" in dict(learn.named_parameters())


@pytest.mark.parametrize("residual_type", [1, 2, 3])
def test_graph_transformer_residual_types_and_multilevel(residual_type):
    torch.manual_seed(0)
    gt = GraphTransformer(dim=32, depth=2, heads=2, dim_head=8, edge_dim=32, abs_pos=True,
                          edges="fixed_random", residual_type=residual_type)
    x = torch.randn(3, 18, 32)
    h, levels = gt(x)
    assert h.shape == x.shape and len(levels) == 3 and levels[0] is x
    emb = multi_level_embedding(levels)
    assert torch.allclose(emb, (levels[0] + levels[1] + levels[2]).mean(1))
    h.sum().backward()
    assert all(p.grad is not None for p in gt.parameters())


def test_graph_transformer_is_permutation_equivariant_without_positions():
    """Fully connected, no abs_pos, no edges: permuting the nodes permutes the output (sanity of attention)."""
    torch.manual_seed(0)
    gt = GraphTransformer(dim=16, heads=2, dim_head=8, edge_dim=16).eval()
    x = torch.randn(2, 18, 16)
    perm = torch.randperm(18)
    assert torch.allclose(gt(x)[0][:, perm], gt(x[:, perm])[0], atol=1e-5)


def test_adjacency_embedding_changes_output():
    torch.manual_seed(0)
    adj = torch.eye(18)
    a = GraphTransformer(dim=16, heads=2, dim_head=8, edge_dim=16, adjacency=adj)
    b = GraphTransformer(dim=16, heads=2, dim_head=8, edge_dim=16)
    b.load_state_dict(a.state_dict() | {"adjacency": b.adjacency})
    x = torch.randn(1, 18, 16)
    assert not torch.allclose(a(x)[0], b(x)[0])
    with pytest.raises(ValueError, match="18x18"):
        GraphTransformer(dim=16, heads=2, dim_head=8, edge_dim=16, adjacency=torch.ones(3, 3))


def test_gated_residual_is_convex_combination():
    g = GatedResidual(4)
    x, r = torch.zeros(2, 4), torch.ones(2, 4)
    out = g(x, r)
    assert torch.all(out > 0) and torch.all(out < 1)


def test_anaxnet_dense_and_pyg_gcn_agree():
    torch.manual_seed(0)
    adj = (torch.rand(18, 18) > 0.5).float()
    adj.fill_diagonal_(1)
    dense, pyg = DenseGCN(16, 32), PygGCN(16, 32)
    with torch.no_grad():
        pyg.conv1.lin.weight.copy_(dense.w1.t())
        pyg.conv2.lin.weight.copy_(dense.w2.t())
    f = torch.randn(3, 18, 16)
    assert torch.allclose(dense(f, adj), pyg(f, adj), atol=1e-5)
    # and the formula g = A LeakyReLU(A f W1) W2
    ref = adj @ torch.nn.functional.leaky_relu(adj @ f @ dense.w1, 0.2) @ dense.w2
    assert torch.allclose(dense(f, adj), ref, atol=1e-5)


def test_anaxnet_shapes_and_gcn_size():
    model = AnaXNet(backbone="resnet18")
    assert model.gcn.w1.shape == (512, 2048) and model.gcn.w2.shape == (2048, 512)
    out = model(torch.randn(2, 18, 512))
    assert out["logits"].shape == (2, 9) and out["embedding"].shape == (2, 512)


def test_frozen_cnn_eval_mode_by_default_and_bn_drift_switch():
    frozen = build_model(ModelConfig(pretrained=False, name="v0", backbone="resnet18")).train()
    assert not frozen.encoder.cnn.net.training and frozen.encoder.head.training
    assert not any(p.requires_grad for p in frozen.encoder.cnn.parameters())
    drift = build_model(ModelConfig(pretrained=False, name="v0", backbone="resnet18", bn_drift=True)).train()
    assert drift.encoder.cnn.net.training


def test_crop_and_cached_feature_paths_agree():
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained=False, name="graph_transformer", backbone="resnet18", dim=64, heads=2,
                                    dim_head=8, edges="fixed_random")).eval()
    crops = torch.randn(2, 18, 3, 32, 32)
    feats = model.encoder.cnn_features(crops)
    assert torch.allclose(model(crops)["embedding"], model(feats)["embedding"], atol=1e-5)


def test_global_baseline_embeds_with_frozen_feature():
    model = build_model(ModelConfig(pretrained=False, name="resnet50", backbone="resnet18"))
    out = model(torch.randn(2, 512))
    assert out["logits"].shape == (2, 9) and out["embedding"].shape == (2, 512)


def test_cooccurrence_adjacency_is_required():
    with pytest.raises(ValueError, match="adjacency"):
        build_model(ModelConfig(pretrained=False, name="graph_transformer", backbone="resnet18", adjacency="cooccurrence"))


def test_edge_attention_equals_torch_geometric_transformer_conv():
    """The dense attention computes exactly what PyG's TransformerConv computes on the fully connected graph."""
    from chextriev.models.graph_transformer import EdgeAttention, pyg_attention

    torch.manual_seed(0)
    attn = EdgeAttention(dim=32, heads=4, dim_head=8, edge_dim=16)
    edges = torch.randn(18, 18, 16)
    z = torch.randn(3, 18, 32)
    assert torch.allclose(attn(z, edges), pyg_attention(attn, edges)(z), atol=1e-5)


def test_reproduce_configs_require_imagenet_weights(monkeypatch, tmp_path, capsys):
    """A frozen RANDOM CNN only when the config says so (model.pretrained: false, the demo); otherwise the local
    file or timm's download, and offline that is one line naming model.pretrained_path."""
    import urllib.error

    import timm.models._builder as builder

    from chextriev.config import ChextrievConfig
    from shared.cli import run_cli
    from shared.config import load_config

    calls = []

    def no_network(model, pretrained_cfg=None, *args, **kwargs):
        calls.append(pretrained_cfg)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(builder, "load_pretrained", no_network)
    pretend_online(monkeypatch)   # the download itself fails (offline, shared.weights stops before it)
    configs = Path(__file__).resolve().parents[1] / "configs"
    v6 = load_config(ChextrievConfig, configs / "v6.yaml", ["model.backbone=resnet18"]).model
    assert v6.pretrained and v6.pretrained_path is None
    assert run_cli("python -m chextriev.train", lambda: build_model(v6)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--set model.pretrained_path=FILE" in err and "resnet18" in err
    assert len(calls) == 1
    # the demo's random CNN never downloads
    demo = load_config(ChextrievConfig, configs / "demo.yaml").model
    assert not demo.pretrained
    build_model(demo)
    assert len(calls) == 1
    # a local file: loaded, no download; a missing one names the key
    import timm

    state = timm.create_model("resnet18", num_classes=0).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    v6.pretrained_path = str(tmp_path / "r18.pth")
    model = build_model(v6)
    assert torch.equal(model.encoder.cnn.net.conv1.weight, state["conv1.weight"]) and len(calls) == 1
    v6.pretrained_path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="model.pretrained_path: file not found"):
        build_model(v6)


def test_imagenet_download_asks_timm_for_torchvision_default_weights(monkeypatch):
    """The original's frozen CNNs load torchvision's DEFAULT weights: ResNet50 IMAGENET1K_V2, DenseNet121 V1."""
    import timm.models._builder as builder

    seen = []
    pretend_online(monkeypatch)
    monkeypatch.setattr(builder, "load_pretrained", lambda model, pretrained_cfg=None, *a, **k: seen.append(
        pretrained_cfg))
    build_model(ModelConfig(name="resnet50", backbone="resnet50", dim=16))
    assert seen[-1]["tag"] == "tv2_in1k" and seen[-1]["url"].endswith("resnet50-11ad3fa6.pth")
    build_model(ModelConfig(name="anaxnet", backbone="densenet121", adjacency="full"))
    assert seen[-1]["tag"] == "tv_in1k" and seen[-1]["architecture"] == "densenet121"


def test_torchvision_resnet50_v1_file_is_refused(monkeypatch, tmp_path):
    """The V1 file (resnet50-0676ba61.pth, what older instructions named) would change every number: one error."""
    import hashlib

    import timm

    from chextriev.models import common

    path = tmp_path / "resnet50_imagenet.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]        # stands in for V1's 0676ba61
    monkeypatch.setitem(common.TORCHVISION_FILES, f"resnet18-{prefix}.pth", "torchvision ResNet-18 IMAGENET1K_V1")
    monkeypatch.setitem(common.TORCHVISION_DEFAULT_FILES, "resnet18", "resnet18-v2.pth")
    with pytest.raises(ValueError, match="model.pretrained_path: .* IMAGENET1K_V1 .* set it to the resnet18-v2.pth"):
        common.create_backbone("resnet18", str(path))
    monkeypatch.setitem(common.TORCHVISION_DEFAULT_FILES, "resnet18", f"resnet18-{prefix}.pth")
    assert common.create_backbone("resnet18", str(path)).num_features == 512      # the DEFAULT file loads
    assert "resnet50-0676ba61.pth" in common.TORCHVISION_FILES                    # the real V1 file is known
    assert common.TORCHVISION_DEFAULT_FILES["resnet50"] == "resnet50-11ad3fa6.pth"
