"""What the published rows were produced with (spec section 7): variant settings, inits, crops, the faithful and
fixed reproduce protocols, the label-policy guard and the validation schedule."""
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import load_config

from chextriev.config import PROTOCOLS, ChextrievConfig, protocol_of
from chextriev.data import crop_boxes
from chextriev.models import ATHNet, build_model
from chextriev.models.anaxnet import DenseGCN, PygGCN
from chextriev.models.graph_transformer import GraphTransformer
from chextriev.train import open_prepared, uses_cache, validation_interval

HERE = Path(__file__).resolve().parents[1]
CONFIGS = HERE / "configs"
SMALL = ["model.backbone=resnet18", "model.pretrained=false", "model.dim=32", "model.heads=2", "model.dim_head=16"]

# config -> (adjacency, abs_pos, edges, graph_importance): the variant table of the README
VARIANTS = {"v1": ("cooccurrence", False, "none", 1.0), "v2": ("full", False, "none", 1.0),
            "v3": ("full", True, "none", 1.0), "v4": ("full", True, "fixed_random", 0.0),
            "v5": ("full", False, "fixed_random", 1.0), "v6": ("full", True, "fixed_random", 1.0),
            "v6_learnable_edges": ("full", True, "learnable", 1.0)}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_configs_build_the_original_graph_transformers(name):
    cfg = load_config(ChextrievConfig, CONFIGS / f"{name}.yaml", SMALL)
    m = cfg.model
    assert (m.adjacency, m.abs_pos, m.edges, cfg.loss.graph_importance) == VARIANTS[name]
    assert m.residual_type == 2 and m.depth == 2 and cfg.optim.lr == 1e-4
    adjacency = torch.eye(18) if m.adjacency == "cooccurrence" else None
    model = build_model(m, adjacency).eval()
    assert isinstance(model.graph, GraphTransformer) and model.graph.residual_type == 2
    assert (model.graph.pos_emb is not None) == m.abs_pos
    out = model(torch.randn(2, 18, model.encoder.cnn.num_features))     # cached-feature path, no CNN pass
    assert out["logits"].shape == (2, 9) and out["node_logits"].shape == (2, 18, 9)
    assert out["embedding"].shape == (2, 32) and torch.isfinite(out["embedding"]).all()


def test_residual_type_2_gates_every_sublayer_towards_the_input():
    """One layer by hand: h1 = G(attn(LN(h0) + P), h0); h = G(FF(LN(h1)), h0) (type 1 would use h1 in the second)."""
    torch.manual_seed(0)
    gt = GraphTransformer(dim=16, depth=1, heads=2, dim_head=8, edge_dim=16, abs_pos=True, edges="fixed_random")
    layer, x = gt.layers[0], torch.randn(2, 18, 16)
    with torch.no_grad():
        h1 = layer.attn_residual(layer.attn(layer.attn_norm(x) + gt.pos_emb.weight[:18], gt.edge_features()), x)
        expected = layer.ff_residual(layer.ff(layer.ff_norm(h1)), x)
        local = layer.ff_residual(layer.ff(layer.ff_norm(h1)), h1)
        h, _ = gt(x)
    assert torch.allclose(h, expected, atol=1e-6) and not torch.allclose(h, local, atol=1e-3)


def test_ath_weights_start_xavier_normal():
    torch.manual_seed(0)
    net = ATHNet(32, 9, 256)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 12                          # 3 ResBlocks x 3 convs, attention conv, hash, type
    for m in layers:
        w = m.weight
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
        std = math.sqrt(2.0 / (fan_in + fan_out))
        tol = 4 / math.sqrt(w.numel())                # a few standard errors of the sample std
        assert abs(w.std().item() / std - 1) < max(tol, 0.05), m
    hash_w = net.hash.weight                          # 1024 x 32: PyTorch's default would have std 0.018
    assert hash_w.std().item() == pytest.approx(math.sqrt(2 / 1056), rel=0.03)
    assert hash_w.abs().max().item() > 1 / math.sqrt(1024)   # a normal, not the default's uniform(+-1/32)


@pytest.mark.parametrize("impl", [DenseGCN, PygGCN])
def test_anaxnet_gcn_weights_uniform_over_sqrt_out(impl):
    torch.manual_seed(0)
    gcn = impl(64, 256)
    weights = [gcn.w1, gcn.w2] if impl is DenseGCN else [gcn.conv1.lin.weight.t(), gcn.conv2.lin.weight.t()]
    for w, out_features in zip(weights, (256, 64)):   # (in, out)
        bound = 1 / math.sqrt(out_features)
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.98 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_crops_are_zero_padded_outside_the_image_not_clipped():
    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, (40, 30), dtype=np.uint8)             # no zero pixel inside the image
    inside = crop_boxes(img, np.array([[5, 7, 16, 16]]), 16)[0]      # same size: the resize is the identity
    np.testing.assert_allclose(inside, img[7:23, 5:21], atol=1e-3)
    corner = crop_boxes(img, np.array([[-4, -6, 16, 16]]), 16)[0]    # reaches over the top-left corner
    assert (corner[:6] == 0).all() and (corner[:, :4] == 0).all()
    np.testing.assert_allclose(corner[6:, 4:], img[0:10, 0:12], atol=1e-3)
    rounded = crop_boxes(img, np.array([[5.4, 6.6, 16, 16]]), 16)[0]  # corners rounded as PIL's crop
    np.testing.assert_allclose(rounded, img[7:23, 5:21], atol=1e-3)
    # a box half outside on the right and bottom, resized to 224: the outer half stays black
    big = crop_boxes(np.full((100, 80), 200, np.uint8), np.array([[60, 50, 40, 100]]), 224)[0]
    assert big.shape == (224, 224) and big.dtype == np.float32
    assert (big[:, 115:] == 0).all() and (big[115:] == 0).all()       # the edge at 112 blurs over ~3 px
    assert np.allclose(big[:108, :108], 200, atol=1e-3)


def test_crops_are_resized_with_antialiasing():
    """A 1-pixel checkerboard shrunk 5x: antialiasing averages it to mid-grey (plain bilinear would hit pixels)."""
    board = (np.indices((1120, 1120)).sum(0) % 2 * 255).astype(np.uint8)
    small = crop_boxes(board, np.array([[0, 0, 1120, 1120]]), 224)[0]
    assert abs(small.mean() - 127.5) < 1 and small.std() < 5


def test_bad_box_is_one_clear_error():
    with pytest.raises(ValueError, match=r"box 0 .*no area"):
        crop_boxes(np.zeros((20, 20), np.uint8), np.array([[3, 3, 0.2, 5]]), 8)


def test_bn_drift_runs_the_cnn_live_instead_of_the_cache():
    assert uses_cache(load_config(ChextrievConfig, CONFIGS / "v6.yaml"))
    assert not uses_cache(load_config(ChextrievConfig, CONFIGS / "v6.yaml", ["model.bn_drift=true"]))


def test_prepared_data_with_another_label_policy_is_refused(prepared_dir):
    ok = load_config(ChextrievConfig, CONFIGS / "v6.yaml", [f"data.prepared={prepared_dir}"])
    assert open_prepared(ok).meta["label_policy"] == "yes_wins"
    ok.data.label_policy = "last_wins"
    with pytest.raises(ValueError, match="prepared with label_policy=yes_wins .* data.label_policy=last_wins"):
        open_prepared(ok)


@pytest.mark.parametrize("steps, per_epoch, expected", [(10, 2, 5), (11, 2, 6), (1, 2, 1), (7, 1, 7)])
def test_validation_twice_per_epoch(steps, per_epoch, expected):
    cfg = load_config(ChextrievConfig, CONFIGS / "v6.yaml", [f"val_per_epoch={per_epoch}"])
    assert validation_interval(cfg, steps) == expected
    base = load_config(ChextrievConfig, CONFIGS / "v6.yaml")
    assert (base.val_per_epoch, base.engine.early_stop_patience) == (2, 4)
    manual = load_config(ChextrievConfig, CONFIGS / "v6.yaml", ["val_per_epoch=0", "engine.val_every_iters=3"])
    assert validation_interval(manual, steps) == 3


def test_ath_runs_on_one_gpu_batch_of_96():
    cfg = load_config(ChextrievConfig, CONFIGS / "ath.yaml")
    assert cfg.data.batch_size * cfg.engine.grad_accum == 96 and cfg.optim.lr == 1e-3


def _train_sets(target: str, data: Path) -> dict:
    proc = subprocess.run(["make", "-n", "-o", "install", target, f"DATA={data}"], cwd=HERE.parent,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    train = [line for line in proc.stdout.splitlines() if "-m chextriev.train" in line]
    test = [line for line in proc.stdout.splitlines() if "-m chextriev.test" in line]
    assert len(train) == len(test) == 1
    assert "-cfg" not in test[0] and "--run" in test[0]        # test takes the run's own config
    items = re.search(r"--set (.*)$", train[0]).group(1).split()
    return dict(item.split("=", 1) for item in items)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_faithful_and_fixed_targets_differ_exactly_in_bn_mode_and_label_policy(tmp_path):
    faithful = _train_sets("reproduce-chextriev-mimic-v6", tmp_path)
    fixed = _train_sets("reproduce-chextriev-mimic-v6-fixed", tmp_path)
    differ = {k for k in faithful.keys() | fixed.keys() if faithful.get(k) != fixed.get(k)}
    # the two settings, plus what follows from them: the prepared data (one per label policy) and the run name
    assert differ == {"model.bn_drift", "data.label_policy", "data.prepared", "name"}
    for sets, protocol in ((faithful, "faithful"), (fixed, "fixed")):
        expected = {k: str(v).lower() for k, v in PROTOCOLS[protocol][0].items()}
        assert {k: sets[k] for k in expected} == expected
        assert sets["data.prepared"] == f"{tmp_path}/chextriev_prepared/{sets['data.label_policy']}"
        cfg = load_config(ChextrievConfig, CONFIGS / "v6.yaml", [f"{k}={v}" for k, v in sets.items()])
        assert protocol_of(cfg) == protocol
    assert (faithful["name"], fixed["name"]) == ("v6", "v6-fixed")
    assert protocol_of(load_config(ChextrievConfig, CONFIGS / "v6.yaml", ["model.bn_drift=true"])) == "custom"
