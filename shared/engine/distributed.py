"""DDP helpers: initialisation from ``torchrun`` environment variables, rank queries, gathers."""
from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist


def under_torchrun() -> bool:
    """True when launched by torchrun with more than one process (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (or not distributed). Safe to call before the process group exists."""
    return get_rank() == 0


def init_distributed() -> bool:
    """Initialise the default process group from torchrun's env vars; no-op when not under torchrun.

    Uses ``cpu:gloo,cuda:nccl`` when CUDA is available (so both CPU and GPU tensors can be reduced) and plain
    ``gloo`` otherwise. Idempotent; returns whether a process group is active.
    """
    if is_distributed():
        return True
    if not under_torchrun() or not dist.is_available():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(get_local_rank())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    # A process group still alive at interpreter exit can abort the process ("terminate called without an active
    # exception" from gloo's threads) after the work is done; tear it down first.
    atexit.register(destroy_distributed)
    return True


def destroy_distributed() -> None:
    """Destroy the default process group if one is active (idempotent; safe at exit)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    if not is_distributed():
        return [obj]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_max(value: float, device: torch.device | str = "cpu") -> float:
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (first dims may differ between ranks) from all ranks along dim 0, in rank order.

    Every rank gets the full result. Identity when not distributed. Use it in ``evaluate`` to gather predictions
    and targets: over the shards of a ``make_loader(train=False)`` loader the result is in dataset order.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    world = get_world_size()
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    max_n = max(sizes_list)
    if tensor.shape[0] < max_n:
        pad = tensor.new_zeros((max_n - tensor.shape[0],) + tuple(tensor.shape[1:]))
        tensor = torch.cat([tensor, pad], 0)
    chunks = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(chunks, tensor)
    return torch.cat([c[:n] for c, n in zip(chunks, sizes_list)], 0)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), torch.nn.Module):
            model = model._orig_mod
        else:
            return model
