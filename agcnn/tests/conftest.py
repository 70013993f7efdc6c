"""Shared fixtures of AG-CNN's tests: the synthetic NIH twin and the demo config pointed at it."""
from pathlib import Path

import pytest
import torch

from shared.config import load_config
from shared.data.synthetic import generate

from agcnn.config import Config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TINY_DENSENET = "model.backbone_kwargs={growth_rate: 8, block_config: [1, 1, 1, 1]}"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run several times faster single-threaded on a shared 2-core machine (and deterministically)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def twin(tmp_path_factory) -> Path:
    """NIH twin, 300 images of 64 px (official split: ~240 train+val, ~60 test)."""
    return generate("nih", tmp_path_factory.mktemp("agcnn_twin") / "nih", n=300, size=64, seed=0)


@pytest.fixture
def make_config():
    """``make_config(root, "key=value", ...)`` -> the demo config on ``root`` with overrides."""
    def make(root: Path, *overrides: str) -> Config:
        return load_config(Config, DEMO, [f"data.root={root}", "engine.log_every=1000", *overrides])
    return make
