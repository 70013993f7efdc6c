"""A failed ImageNet download is one line that names the local-file key, never a urllib/huggingface traceback."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from shared.cli import run_cli
from shared.testing import pretend_online
from shared.weights import (PretrainedWeightsError, create_timm_model, explain_download_failure,
                            torchvision_imagenet_state_dict)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


@pytest.fixture
def online(monkeypatch):
    """The network looks reachable and HF_HUB_OFFLINE is unset: the (stubbed) download itself is tried."""
    pretend_online(monkeypatch)


def test_timm_download_failure_is_one_line_naming_the_key(monkeypatch, capsys, online):
    import timm.models._builder as builder

    monkeypatch.setattr(builder, "load_pretrained", _no_network)
    with pytest.raises(PretrainedWeightsError, match=r"timm 'resnet18'.*--set model\.pretrained_path=FILE"):
        create_timm_model("resnet18", pretrained=True, key="model.pretrained_path", num_classes=0)
    assert run_cli("prog", lambda: create_timm_model("resnet18", pretrained=True, num_classes=0)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error: could not get the ImageNet weights")
    assert "URLError" in err and "model.pretrained=false" in err


def test_huggingface_offline_error_is_explained():
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(PretrainedWeightsError, match="LocalEntryNotFoundError.*--set a.b=FILE") as info:
        with explain_download_failure("timm 'x'", "a.b", None):
            raise LocalEntryNotFoundError("Cannot find the requested files in the local cache.\nsecond line")
    assert "\n" not in str(info.value) and "random" not in str(info.value)


def test_other_errors_pass_through():
    with pytest.raises(RuntimeError, match="boom"):
        with explain_download_failure("x", "k"):
            raise RuntimeError("boom")


def test_no_download_without_pretrained(monkeypatch):
    import timm.models._builder as builder

    monkeypatch.setattr(builder, "load_pretrained", _no_network)
    assert create_timm_model("resnet18", pretrained=False, num_classes=0).num_features == 512


def test_torchvision_download_failure(monkeypatch, tmp_path, online):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    with pytest.raises(PretrainedWeightsError, match=r"torchvision 'resnet18'.*--set model\.pretrained_path=FILE"):
        torchvision_imagenet_state_dict("resnet18")
    # offline: fail from the empty cache without trying the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(PretrainedWeightsError, match="HF_HUB_OFFLINE=1"):
        torchvision_imagenet_state_dict("resnet18")


def test_read_state_dict_file_unwraps_and_names_the_key_on_errors(tmp_path):
    from shared.engine import CheckpointError
    from shared.weights import read_state_dict_file

    weight = torch.ones(2, 2)
    nested = tmp_path / "nested.pth"
    torch.save({"epoch": 3, "state_dict": {"module.fc.weight": weight}}, nested)
    assert list(read_state_dict_file(nested)) == ["fc.weight"]
    with pytest.raises(FileNotFoundError, match="model.x: file not found"):
        read_state_dict_file(tmp_path / "absent.pth", "model.x")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        read_state_dict_file(corrupt)
    not_weights = tmp_path / "numbers.pth"
    torch.save({"lr": 0.1}, not_weights)
    with pytest.raises(ValueError, match="model.y: .*numbers.pth does not hold a state dict"):
        read_state_dict_file(not_weights, "model.y")
