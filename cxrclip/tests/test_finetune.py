"""Linear probe as the original: warmup + cosine learning rate, the epoch with the lowest validation loss kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrclip.finetune import train_probe


def _features(n: int, seed: int, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    x = rng.normal(0, noise, (n, 8)).astype(np.float32) + y * 1.5
    return torch.from_numpy(x), y


@pytest.mark.parametrize("select", ["val-loss", "val-auroc"])
def test_probe_keeps_the_selected_epoch_and_learns(select):
    train_x, train_y = _features(64, 0)
    valid_x, valid_y = _features(64, 1)
    probe, history = train_probe(train_x, train_y, valid_x, valid_y, epochs=20, lr=0.05, weight_decay=1e-4,
                                 batch_size=16, select=select)
    column, best = ("val_loss", history["val_loss"].idxmin()) if select == "val-loss" else \
        ("val_auroc", history["val_auroc"].idxmax())
    assert history["kept"].sum() == 1 and history["kept"].idxmax() == best
    with torch.no_grad():  # the returned weights are that epoch's
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(valid_x), torch.as_tensor(valid_y))
    if select == "val-loss":
        assert loss.item() == pytest.approx(history.loc[best, column], rel=1e-6)
    assert history["val_auroc"].max() > 0.8


def test_probe_lr_warms_up_then_decays_to_zero_unless_constant():
    train_x, train_y = _features(64, 0)
    _, history = train_probe(train_x, train_y, train_x, train_y, epochs=20, lr=0.01, weight_decay=0, batch_size=16)
    lr = history["lr"].to_numpy()
    peak = int(lr.argmax())
    assert 0 < peak <= 3 and lr[0] < lr[peak] == pytest.approx(0.01, rel=0.05)  # 10% of 80 steps warm up
    assert np.all(np.diff(lr[peak:]) <= 0) and lr[-1] < 0.001
    _, flat = train_probe(train_x, train_y, train_x, train_y, epochs=5, lr=0.01, weight_decay=0, batch_size=16,
                          schedule="constant")
    assert np.allclose(flat["lr"], 0.01)
