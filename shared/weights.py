"""ImageNet weights from the hubs, with a failed download turned into one line that names the local-file fix.

    from shared.weights import create_timm_model, torchvision_imagenet_state_dict
    net = create_timm_model("resnet50", pretrained=True, key="model.pretrained_path", num_classes=0)
    state = torchvision_imagenet_state_dict("resnet50", key="model.pretrained_path")

Offline (no network, or ``HF_HUB_OFFLINE=1``) with nothing in the hub cache, these raise
:class:`PretrainedWeightsError` — a ``FileNotFoundError``, so ``shared.cli`` prints it as
``prog: error: could not get the ImageNet weights of timm 'resnet50' (...): download them ... --set
model.pretrained_path=FILE ...`` instead of a urllib / huggingface_hub traceback. Loading a local file is the
method's own business (each knows its key names); this module wraps the download and reads the file
(:func:`read_state_dict_file`).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


class PretrainedWeightsError(FileNotFoundError):
    """Hub weights could not be fetched (offline, nothing cached): the message names the config key to set."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for no network (the hubs then only read their caches)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download_errors() -> tuple[type[BaseException], ...]:
    # urllib's URLError, socket errors, requests' and huggingface_hub's errors (LocalEntryNotFoundError,
    # OfflineModeIsEnabled, HfHubHTTPError) are all OSErrors; httpx's transport errors are not.
    errors: list[type[BaseException]] = [OSError]
    with contextlib.suppress(ImportError):
        import httpx

        errors.append(httpx.TransportError)
    return tuple(errors)


def explain(what: str, key: str, off_key: str | None = None, err: BaseException | None = None) -> str:
    """The one-line message: what could not be fetched, why (first line of the error), and the fix."""
    reason = ""
    if err is not None:
        text = (str(err).strip().splitlines() or [""])[0]
        text = text if len(text) <= 160 else text[:157] + "..."
        reason = f" ({type(err).__name__}: {text})" if text else f" ({type(err).__name__})"
    off = f", or --set {off_key}=false to start from random weights" if off_key else ""
    return (f"could not get the ImageNet weights of {what}{reason}: download them where there is network and "
            f"pass the local file with --set {key}=FILE (a timm/torchvision state dict){off}")


@contextlib.contextmanager
def explain_download_failure(what: str, key: str, off_key: str | None = None) -> Iterator[None]:
    """Turn a failed download inside the block into :class:`PretrainedWeightsError` naming ``key``."""
    try:
        yield
    except PretrainedWeightsError:
        raise
    except _download_errors() as err:
        raise PretrainedWeightsError(explain(what, key, off_key, err)) from err


def create_timm_model(name: str, *, pretrained: bool, key: str = "model.pretrained_path",
                      off_key: str | None = "model.pretrained", **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=..., **kwargs)``; a failed weights download -> one-line error."""
    import timm

    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    with explain_download_failure(f"timm '{name}'", key, off_key):
        return timm.create_model(name, pretrained=True, **kwargs)


def torchvision_imagenet_state_dict(arch: str, *, key: str = "model.pretrained_path",
                                    off_key: str | None = "model.pretrained",
                                    weights: str = "IMAGENET1K_V1") -> dict:
    """torchvision's ``<arch>`` ``weights`` state dict (torch hub cache or download; offline: cache only)."""
    import torch
    import torchvision

    what = f"torchvision '{arch}' {weights}"
    try:
        entry = getattr(torchvision.models.get_model_weights(arch), weights)
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{what}: no such torchvision weights ({err})") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if hub_offline() and not cached.is_file():
        raise PretrainedWeightsError(explain(what, key, off_key, OSError(f"HF_HUB_OFFLINE=1 and {cached} is "
                                                                         "not in the torch hub cache")))
    with explain_download_failure(what, key, off_key):
        return entry.get_state_dict(progress=True)


def read_state_dict_file(path: str | Path, key: str = "model.pretrained_path") -> dict[str, torch.Tensor]:
    """A local weights file (``.pth``/``.pt``/``.tar`` loaded with ``weights_only=True``, or ``.safetensors``) as a
    flat state dict: unwrapped from a ``state_dict`` / ``model`` / ``model_state`` entry, ``module.`` prefixes
    removed. A missing file names ``key``; an unreadable one, or one that holds no tensors, is one clear error."""
    from shared.engine.checkpoint import load_checkpoint

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        obj = load_checkpoint(path)
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{key}: {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
