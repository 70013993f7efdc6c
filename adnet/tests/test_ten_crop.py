"""Optional test-time ten-crop (spec section 4): crop geometry on the floor(size/0.95) resize, probability averaging."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from shared.config import load_config
from shared.data import synthetic

from adnet import test as adnet_test
from adnet.config import ADNetConfig, DataConfig
from adnet.data import eval_transform, ten_crop_transform
from adnet.evaluate import predict

from .test_knn_weights import DEMO, _ours
from .conftest import tiny_model


def test_ten_crop_shapes_and_geometry():
    cfg = DataConfig(test_size=96, crop_pct=0.95)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    crops = ten_crop_transform(cfg)(img)
    assert crops.shape == (10, 3, 96, 96)
    # crop 4 is the centre crop of the same floor(96 / 0.95) = 101 px resize the single-crop transform uses
    torch.testing.assert_close(crops[4], eval_transform(cfg)(img))
    torch.testing.assert_close(crops[9], crops[4].flip(-1))          # 5..9: the same crops of the flipped image
    assert not torch.allclose(crops[0], crops[1])                    # corners differ


class _Fixed(torch.nn.Module):
    """logit of class j = mean of channel j % 3 (so each crop scores differently)."""

    def forward(self, x):
        return x.mean((2, 3))[:, [0, 1, 2, 0]] * 3.0


def test_predict_averages_sigmoid_probabilities_over_crops():
    torch.manual_seed(0)
    x = torch.randn(5, 10, 3, 8, 8)
    y = torch.randint(0, 2, (5, 4)).float()
    loader = DataLoader([{"image": x[i], "labels": y[i]} for i in range(5)], batch_size=2)
    prob, labels = predict(_Fixed(), loader, torch.device("cpu"))
    expected = torch.sigmoid(_Fixed()(x.flatten(0, 1))).unflatten(0, (5, 10)).mean(1)
    assert prob.shape == (5, 4)
    np.testing.assert_allclose(prob, expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())
    with pytest.raises(ValueError, match="multi-crop"):
        predict(_Fixed(), loader, torch.device("cpu"), embed=True)


def test_test_cli_ten_crop_flag(tmp_path):
    root = synthetic.generate("nih", tmp_path / "nih", n=32, size=96, seed=2)
    path = tmp_path / "best.pt"
    torch.save(_ours(tiny_model(num_classes=14, seed=1)), path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_base_: {DEMO}\ndata: {{nih_root: {root}}}\n")
    outs = {}
    for flag in ([], ["--ten-crop"]):
        out = tmp_path / ("ten" if flag else "one")
        assert adnet_test.main(["-cfg", str(cfg), "--weights", str(path), "--run-dir", str(out)] + flag) == 0
        outs[bool(flag)] = np.load(out / "predictions.npz")["prob"]
        notes = json.loads((out / "results.json").read_text())["notes"]
        assert any("ten-crop" in n for n in notes) == bool(flag)
    assert outs[True].shape == outs[False].shape
    assert not np.allclose(outs[True], outs[False])
