"""Test helpers shared by the methods' test suites (no method imports, no files outside the project).

    from shared.testing import read_layout, seeded_state_dict
    layout = read_layout("adnet/tests/layouts/adnet_resnet50_ADNet_IN1K_NIH.keys.json.gz")  # [(key, shape, dtype)]
    state = seeded_state_dict(layout, seed=0)     # what the authors' code would save, with made-up values
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch


def pretend_online(monkeypatch) -> None:
    """shared.weights sees a reachable network and no ``HF_HUB_OFFLINE``, so a test's stubbed download (timm's
    ``load_pretrained``, ``torch.hub``) runs instead of the offline check that would stop before it."""
    import shared.weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(shared.weights, "network_reachable", lambda host, timeout=3.0: True)


def read_layout(path: str | Path) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """A ``*.keys.json[.gz]`` layout (a list of ``[key, shape, "torch.float32"]``, in the file's order)."""
    path = Path(path)
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [(key, tuple(shape), getattr(torch, dtype.removeprefix("torch."))) for key, shape, dtype in json.loads(text)]


def seeded_state_dict(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    """One distinct seeded tensor per layout entry: normal floats (BatchNorm ``running_var`` in [0.5, 1.5) so the
    model still runs), small integers for integer tensors. A mapping that puts a tensor in the wrong place cannot
    pass a value comparison by accident."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in layout:
        if not dtype.is_floating_point:
            state[key] = torch.randint(1, 1000, shape, generator=gen, dtype=dtype)
        elif key.endswith("running_var"):
            state[key] = (torch.rand(shape, generator=gen) + 0.5).to(dtype)
        else:
            state[key] = torch.randn(shape, generator=gen).to(dtype)
    return state


def save_truncated(state: dict, path: str | Path, keep: int = 4000) -> None:
    """A checkpoint cut off after ``keep`` bytes (an interrupted download)."""
    torch.save(state, path)
    Path(path).write_bytes(Path(path).read_bytes()[:keep])


def save_with_pickled_object(state: dict, path: str | Path) -> None:
    """A checkpoint that also pickles a Python object (an argparse Namespace): ``weights_only=True`` refuses it."""
    import argparse
    torch.save({"model": state, "args": argparse.Namespace(lr=0.1)}, path)


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Every tensor of ``model`` still equals ``snapshot`` (a failed load left nothing behind)."""
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshot[key], rtol=0, atol=0, msg=key)
