"""Feature cache equivalence, config/CLI errors, checkpoint round-trip."""
import numpy as np
import pytest
import torch

from shared.cli import run_cli
from shared.config import load_config
from shared.engine import load_checkpoint, load_model_weights, save_checkpoint

from chextriev.config import ChextrievConfig
from chextriev.data import AnatomyDataset, CachedDataset, build_feature_cache
from chextriev.models import ModelConfig, build_model
from chextriev.prepare import Prepared
from chextriev.train import main as train_main
from chextriev import test as cx_test

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_cached_features_equal_crop_path(prepared_dir, tmp_path):
    p = Prepared(prepared_dir)
    rows = p.split("test")[:4]
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained=False, name="graph_transformer", backbone="resnet18", dim=32, heads=2, dim_head=16,
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
    argv = ["-cfg", str(CONFIGS / "v6.yaml"), "--set", f"data.prepared={tmp_path / 'missing'}"]
    assert run_cli("python -m chextriev.train", lambda: train_main(argv)) == 2      # as `python -m` runs it
    err = capsys.readouterr().err
    assert err.startswith("python -m chextriev.train: error:") and "chextriev.prepare" in err


def test_test_cli_needs_a_run_with_its_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        cx_test.main(["--run", str(tmp_path)])
    assert err.value.code == 2 and f"{tmp_path / 'config.yaml'} not found" in capsys.readouterr().err


def test_train_cli_refuses_other_label_policy(prepared_dir, capsys):
    argv = ["-cfg", str(CONFIGS / "v6.yaml"), "--set", f"data.prepared={prepared_dir}", "data.label_policy=last_wins"]
    assert run_cli("python -m chextriev.train", lambda: train_main(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "label_policy=yes_wins" in err and "--label-policy last_wins" in err


def test_test_cli_missing_checkpoint(prepared_dir, tmp_path, capsys):
    argv = ["-cfg", str(CONFIGS / "demo.yaml"), "--run", str(tmp_path), "--set", f"data.prepared={prepared_dir}"]
    code = run_cli("python -m chextriev.test", lambda: cx_test.main(argv))
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_checkpoint_round_trip(tmp_path):
    cfg = ModelConfig(pretrained=False, name="graph_transformer", backbone="resnet18", dim=32, heads=2, dim_head=16,
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
    boxes = np.zeros((2, 18, 4))
    assert cache_key("resnet18", a, "crops", 32, ids, boxes) != cache_key("resnet18", b, "crops", 32, ids, boxes)
    b.load_state_dict(a.state_dict())
    assert cache_key("resnet18", a, "crops", 32, ids, boxes) == cache_key("resnet18", b, "crops", 32, ids, boxes)
    assert cache_key("resnet18", a, "crops", 32, ids, boxes) != cache_key("resnet18", a, "crops", 32, ["x"], boxes)


def test_cache_key_follows_boxes_sizes_and_dtype():
    from chextriev.data import cache_key
    from chextriev.models.common import FrozenCNN

    cnn = FrozenCNN("resnet18")
    ids = ["x", "y"]
    boxes = np.arange(2 * 18 * 4, dtype=np.float64).reshape(2, 18, 4)
    moved = boxes.copy()
    moved[1, 5, 0] += 1                                   # one box of one image one pixel to the right
    key = cache_key("resnet18", cnn, "crops", 32, ids, boxes)
    assert key == cache_key("resnet18", cnn, "crops", 32, ids, boxes.astype(np.float32))
    assert key != cache_key("resnet18", cnn, "crops", 32, ids, moved)
    sizes = np.array([[100.0, 120.0], [100.0, 120.0]])
    assert key != cache_key("resnet18", cnn, "crops", 32, ids, boxes, sizes=sizes)
    assert cache_key("resnet18", cnn, "crops", 32, ids, boxes, sizes=sizes) != \
        cache_key("resnet18", cnn, "crops", 32, ids, boxes, sizes=sizes * 2)
    assert key != cache_key("resnet18", cnn, "crops", 32, ids, boxes, dtype="float32")
    assert "_f32_" in cache_key("resnet18", cnn, "image", 32, ids, dtype="float32")
    # whole-image mode does not depend on boxes
    assert cache_key("resnet18", cnn, "image", 32, ids, boxes) == cache_key("resnet18", cnn, "image", 32, ids, moved)
    with pytest.raises(ValueError, match="boxes"):
        cache_key("resnet18", cnn, "crops", 32, ids)
    with pytest.raises(ValueError, match="dtype"):
        cache_key("resnet18", cnn, "image", 32, ids, dtype="bfloat16")


def test_changed_boxes_rebuild_the_cache_through_make_datasets(prepared_dir, tmp_path):
    """Re-running prepare with other boxes (simulated: the loaded boxes shifted) must not reuse stale crops."""
    from chextriev.train import make_datasets

    p = Prepared(prepared_dir)
    keep = np.concatenate([p.split("train")[:3], p.split("val")[:2]])
    p.frame, p.boxes, p.labels = p.frame.iloc[keep].reset_index(drop=True), p.boxes[keep], p.labels[keep]
    cfg = load_config(ChextrievConfig, CONFIGS / "demo.yaml", [
        f"data.prepared={prepared_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.crop_size=16",
        "data.cache_batch_size=8", "model.dim=32", "model.heads=2", "model.dim_head=16"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    first = make_datasets(cfg, p, model, ("train",))["train"]
    again = make_datasets(cfg, p, model, ("train",))["train"]
    assert again.cache.dir == first.cache.dir                      # same boxes: reused
    old = np.asarray(first[0]["x"]).copy()
    p.boxes = p.boxes.copy()
    p.boxes[:, :, 2:] = np.maximum(p.boxes[:, :, 2:] // 2, 2)      # other boxes: smaller crops
    moved = make_datasets(cfg, p, model, ("train",))["train"]
    assert moved.cache.dir != first.cache.dir
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert not np.allclose(np.asarray(moved[0]["x"]), old)        # features of the new crops, not the stale ones
    live = model.encoder.cnn(moved.base[0]["x"]).detach().numpy()
    np.testing.assert_allclose(np.asarray(moved[0]["x"]), live, rtol=1e-2, atol=1e-2)


def test_float32_cache_is_exact_for_the_global_baseline(prepared_dir, tmp_path):
    """The ResNet50 baseline's embedding IS the cached feature: its float32 cache reproduces the live embedding
    bit for bit (float16 only to ~3 digits), and resnet50.yaml selects float32."""
    p = Prepared(prepared_dir)
    rows = p.split("test")[:4]
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained=False, name="resnet50", backbone="resnet18", dim=16)).eval()
    images = AnatomyDataset(p.frame, p.boxes, p.labels, rows, "image", 32)
    with torch.no_grad():
        live = model(torch.stack([images[i]["x"] for i in range(4)]))["embedding"].numpy()
    c32 = build_feature_cache(model.cnn, images, tmp_path / "c32", batch_size=4, dtype="float32")
    c16 = build_feature_cache(model.cnn, images, tmp_path / "c16", batch_size=4)
    assert c32.data.dtype == np.float32 and c32.meta["dtype"] == "float32" and c16.data.dtype == np.float16
    got32 = np.stack([CachedDataset(images, c32)[i]["x"].numpy() for i in range(4)])
    got16 = np.stack([CachedDataset(images, c16)[i]["x"].numpy() for i in range(4)])
    np.testing.assert_array_equal(got32, live)
    assert not np.array_equal(got16, live)
    assert load_config(ChextrievConfig, CONFIGS / "resnet50.yaml").data.cache_dtype == "float32"
    assert load_config(ChextrievConfig, CONFIGS / "v6.yaml").data.cache_dtype == "float16"
