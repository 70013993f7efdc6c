"""ImageNet weights from the hubs, with a failed download turned into one line that names the local-file fix.

    from shared.weights import create_timm_model, torchvision_imagenet_state_dict
    net = create_timm_model("resnet50", pretrained=True, key="model.pretrained_path", num_classes=0)
    state = torchvision_imagenet_state_dict("resnet50", key="model.pretrained_path")

Offline (``HF_HUB_OFFLINE=1``, or the hub's host unreachable: one probe per process, a few seconds at most) with
nothing in the hub cache, these raise :class:`PretrainedWeightsError` at once, before any download is tried (no
retry loop) — a ``FileNotFoundError``, so ``shared.cli`` prints it as
``prog: error: could not get the ImageNet weights of timm 'resnet50' (...): download them ... --set
model.pretrained_path=FILE ...`` instead of a urllib / huggingface_hub traceback. Loading a local file is the
method's own business (each knows its key names); this module wraps the download and reads the file
(:func:`read_state_dict_file`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:   # torch is imported where it is used: the weights preflight (shared.weights_manifest) starts fast
    import torch
    from torch import nn

HF_HOST = "huggingface.co"              # timm's weights
TORCH_HOST = "download.pytorch.org"     # torchvision's weights


class PretrainedWeightsError(FileNotFoundError):
    """Hub weights could not be fetched (offline, nothing cached): the message names the config key to set."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for no network (the hubs then only read their caches)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def network_reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (DNS included), probed once per
    process: without network the hubs would otherwise retry for a minute before their own error."""
    result: list[bool] = []

    def probe() -> None:
        with contextlib.suppress(OSError):
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)

    thread = threading.Thread(target=probe, daemon=True)   # getaddrinfo ignores socket timeouts: bound it here
    thread.start()
    thread.join(timeout)
    return bool(result)


def offline(host: str) -> bool:
    """No downloads possible from ``host``: ``HF_HUB_OFFLINE=1`` or the host does not answer."""
    return hub_offline() or not network_reachable(host)


def torch_hub_file(filename: str) -> Path:
    """Where torch hub keeps a downloaded weights file (``$TORCH_HOME/hub/checkpoints/<filename>``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def hf_cached(repo_id: str) -> bool:
    """Whether the weights of Hugging Face model ``repo_id`` are in the local hub cache (what timm loads)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str)
               for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))


def _offline_error(what: str, key: str, off_key: str | None, where: str) -> PretrainedWeightsError:
    why = "HF_HUB_OFFLINE=1" if hub_offline() else "no network"
    return PretrainedWeightsError(explain(what, key, off_key, OSError(f"{why} and {where} is not in the hub cache")))


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
    hub_id = _timm_hub_id(name, kwargs)
    if hub_id and not hf_cached(hub_id) and offline(HF_HOST):
        raise _offline_error(f"timm '{name}'", key, off_key, hub_id)
    with explain_download_failure(f"timm '{name}'", key, off_key):
        return timm.create_model(name, pretrained=True, **kwargs)


def _timm_hub_id(name: str, kwargs: dict) -> str | None:
    """The Hugging Face repository timm downloads ``name``'s weights from; None when it reads no hub (a local
    ``file`` / ``state_dict`` in the pretrained config or its overlay, a URL, or a name timm does not know)."""
    from timm.models import get_pretrained_cfg

    if "pretrained_cfg" in kwargs:
        return None
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    with contextlib.suppress(Exception):   # an unknown name: timm.create_model gives its own error
        cfg = {**get_pretrained_cfg(name).to_dict(), **overlay}
        return None if cfg.get("file") or cfg.get("state_dict") else cfg.get("hf_hub_id")
    return None


def torchvision_imagenet_state_dict(arch: str, *, key: str = "model.pretrained_path",
                                    off_key: str | None = "model.pretrained",
                                    weights: str = "IMAGENET1K_V1") -> dict:
    """torchvision's ``<arch>`` ``weights`` state dict (torch hub cache or download; offline: cache only)."""
    import torchvision

    what = f"torchvision '{arch}' {weights}"
    try:
        entry = getattr(torchvision.models.get_model_weights(arch), weights)
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{what}: no such torchvision weights ({err})") from None
    cached = torch_hub_file(Path(entry.url).name)
    if not cached.is_file() and offline(TORCH_HOST):
        raise _offline_error(what, key, off_key, str(cached))
    with explain_download_failure(what, key, off_key):
        return entry.get_state_dict(progress=True)


def read_state_dict_file(path: str | Path, key: str = "model.pretrained_path") -> dict[str, torch.Tensor]:
    """A local weights file (``.pth``/``.pt``/``.tar`` loaded with ``weights_only=True``, or ``.safetensors``) as a
    flat state dict: unwrapped from a ``state_dict`` / ``model`` / ``model_state`` entry, ``module.`` prefixes
    removed. A missing file names ``key``; an unreadable one, or one that holds no tensors, is one clear error."""
    import torch

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
