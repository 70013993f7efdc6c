"""The heartbeat: where a progress bar cannot show (a pipe, a log file), long work prints one line every N s."""
from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from shared.engine import EngineConfig, Trainer, seed_everything
from shared.engine.data import batch_size
from shared.progress import Progress, heartbeat_seconds, progress


def test_heartbeat_line_says_how_far_how_fast_and_how_long(monkeypatch):
    out = io.StringIO()   # not a terminal
    bar = Progress(total=4, desc="epoch 1/2", unit="batch", file=out, every=1e-9)
    for _ in range(3):
        bar.update(1, items=8)
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"epoch 1/2: 3/4 \(75%\) \| [\d.]+ img/s \| loss=0\.5 \| ETA \d+:\d\d", lines[-1]), lines[-1]


def test_heartbeat_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("CXR_HEARTBEAT", raising=False)
    assert heartbeat_seconds() == 60
    monkeypatch.setenv("CXR_HEARTBEAT", "0")   # off
    out = io.StringIO()
    assert list(progress(range(5), desc="test", file=out)) == list(range(5)) and out.getvalue() == ""
    monkeypatch.setenv("CXR_HEARTBEAT", "soon")
    with pytest.raises(ValueError, match="CXR_HEARTBEAT='soon' is not a number of seconds"):
        heartbeat_seconds()


def test_wrapped_iterables_beat_without_a_known_length():
    out = io.StringIO()
    assert list(progress(iter("abc"), desc="prepare", unit="img", file=out, every=1e-9)) == ["a", "b", "c"]
    assert out.getvalue().splitlines()[-1].startswith("prepare: 3 | ") and "img/s" in out.getvalue()


def test_batch_size_finds_the_leading_size_of_nested_batches():
    assert batch_size({"meta": "x", "image": torch.zeros(5, 3, 2, 2)}) == 5
    assert batch_size((torch.zeros(()), [torch.zeros(7, 1)])) == 7 and batch_size({"a": 1}) == 0


def test_training_piped_to_a_file_prints_heartbeats(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXR_HEARTBEAT", "1e-9")
    seed_everything(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(24, 4), torch.randn(24, 1))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01),
                      EngineConfig(epochs=1, device="cpu", num_workers=0), tmp_path / "run",
                      loss_fn=lambda m, b: (nn.functional.mse_loss(m(b[0]), b[1]), {}))
    trainer.fit(trainer.make_loader(data, batch_size=8))
    beats = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1/1: ")]
    assert len(beats) == 3 and beats[-1].startswith("epoch 1/1: 3/3 (100%) | ")
    assert "img/s" in beats[-1] and "loss=" in beats[-1]
