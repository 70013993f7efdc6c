"""Feature cache equivalence, config/CLI errors, checkpoint round-trip."""
import numpy as np
import pytest
import torch

from shared.config import load_config
from shared.engine import load_checkpoint, load_model_weights, save_checkpoint

from chextriev.config import ChextrievConfig
from chextriev.data import AnatomyDataset, CachedDataset, build_feature_cache
from chextriev.models import ModelConfig, build_model
from chextriev.prepare import Prepared
from chextriev.train import main as train_main, uses_cache
from chextriev import test as cx_test

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_cached_features_equal_crop_path(prepared_dir, tmp_path):
    p = Prepared(prepared_dir)
    rows = p.split("test")[:4]
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="graph_transformer", backbone="resnet18", dim=32, heads=2, dim_head=16,
                                    edges="fixed_random")).eval()
    crops = AnatomyDataset(p.frame, p.boxes, p.labels, rows, "crops", 32)
    sample = crops[0]
    assert sample["x"].shape == (18, 3, 32, 32) and sample["node_labels"].shape == (18, 9)
    cache = build_feature_cache(model.encoder.cnn, crops, tmp_path / "cache", batch_size=2)
    assert np.load(tmp_path / "cache" / "features.npy", mmap_mode="r").dtype == np.float16
    cached = CachedDataset(crops, cache)
    with torch.no_grad():
        a = model(torch.stack([crops[i]["x"] for i in range(4)]))["embedding"]
        b = model(torch.stack([cached[i]["x"] for i in range(4)]))["embedding"]
    assert torch.allclose(a, b, atol=1e-2, rtol=1e-2)
    assert torch.equal(cached[1]["labels"], crops[1]["labels"])


def test_cache_refused_with_bn_drift():
    cfg = load_config(ChextrievConfig, CONFIGS / "v6.yaml", ["model.bn_drift=true"])
    with pytest.raises(ValueError, match="bn_drift"):
        uses_cache(cfg)


@pytest.mark.parametrize("name", ["v0_global", "v0_node", "v1", "v2", "v3", "v4", "v5", "v6", "v6_learnable_edges",
                                  "resnet50", "ath", "anaxnet", "demo"])
def test_every_config_loads(name):
    cfg = load_config(ChextrievConfig, CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    if name != "demo":
        assert cfg.engine.clip_grad_norm == 0.5 and cfg.engine.monitor == "val/auroc_mean"
    v6 = load_config(ChextrievConfig, CONFIGS / "v6.yaml").model
    assert (v6.abs_pos, v6.edges, v6.residual_type, v6.adjacency) == (True, "fixed_random", 2, "full")


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        train_main(["-cfg", str(CONFIGS / "v6.yaml"), "--set", "model.nonsense=1"])
    assert err.value.code == 2 and "model.nonsense" in capsys.readouterr().err
    assert train_main(["-cfg", str(CONFIGS / "v6.yaml"), "--set", f"data.prepared={tmp_path / 'missing'}"]) == 2
    assert "chextriev.prepare" in capsys.readouterr().err


def test_test_cli_missing_checkpoint(prepared_dir, tmp_path, capsys):
    code = cx_test.main(["-cfg", str(CONFIGS / "demo.yaml"), "--run", str(tmp_path), "--set",
                      f"data.prepared={prepared_dir}"])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_checkpoint_round_trip(tmp_path):
    cfg = ModelConfig(name="graph_transformer", backbone="resnet18", dim=32, heads=2, dim_head=16,
                      abs_pos=True, edges="fixed_random", residual_type=2)
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(1)
    b = build_model(cfg)
    save_checkpoint({"model": a.state_dict()}, tmp_path / "m.pt")
    load_model_weights(b, load_checkpoint(tmp_path / "m.pt")["model"])
    assert torch.equal(a.graph.edges, b.graph.edges)          # the fixed random edges travel with the weights
    x = torch.randn(2, 18, 512)
    assert torch.allclose(a.eval()(x)["embedding"], b.eval()(x)["embedding"])


@pytest.mark.slow
def test_cache_benchmark_is_discovered_and_runs_tiny(tmp_path):
    from benchmarks import __main__ as runner
    from benchmarks import chextriev_cache

    assert "chextriev_cache" in runner.discover()
    res = chextriev_cache.run(images=8, backbone="resnet18", crop_size=32, dim=32, heads=2, dim_head=16,
                              batch_size=4, image_px=96, data=tmp_path)
    assert res["images"] == 8 and res["epoch_s_with_cache"] > 0 and res["epoch_s_without_cache"] > 0
    assert res["speedup"] == pytest.approx(res["epoch_s_without_cache"] / res["epoch_s_with_cache"])
    assert not (tmp_path / "cache.run").exists()           # the timed cache is removed again


def test_cache_key_follows_the_cnn_weights():
    from chextriev.data import cache_key
    from chextriev.models.common import FrozenCNN

    torch.manual_seed(0)
    a = FrozenCNN("resnet18")
    torch.manual_seed(1)
    b = FrozenCNN("resnet18")
    ids = ["x", "y"]
    assert cache_key("resnet18", a, "crops", 32, ids) != cache_key("resnet18", b, "crops", 32, ids)
    b.load_state_dict(a.state_dict())
    assert cache_key("resnet18", a, "crops", 32, ids) == cache_key("resnet18", b, "crops", 32, ids)
    assert cache_key("resnet18", a, "crops", 32, ids) != cache_key("resnet18", a, "crops", 32, ["x"])
