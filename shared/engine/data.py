"""Data loading that resumes exactly: a seeded, epoch-aware, rank-sharded sampler with batch skipping,
per-sample RNG seeding (augmentations do not depend on workers, ranks or resumption), ``make_loader``."""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .distributed import get_rank, get_world_size

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """Deterministic 63-bit hash of a few ints (splitmix64 rounds)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h >> 1


class ResumableSampler(Sampler):
    """Seeded per-epoch order, sharded over DDP ranks, able to skip the samples a resumed run already consumed.

    * order of epoch ``e``: ``torch.randperm(n)`` from a generator seeded with ``(seed, e)`` (or ``arange``);
    * ``repeats > 1``: repeated augmentation (each index appears ``repeats`` times in a row, so copies land on
      different ranks), the list padded to a multiple of the world size, rank ``r`` takes ``[r::world]`` and keeps
      its first ``floor(n // repeat_round * repeat_round / world)`` samples (``ceil(n / world)`` when
      ``repeat_round`` is 0 or that number is 0) — so an epoch still has about ``n`` samples in total;
    * ``repeats == 1``: padded (``pad=True``, wrap-around like DistributedSampler) to a multiple of the world size,
      rank ``r`` takes ``[r::world]``; ``pad=False`` (evaluation) gives rank ``r`` the ``r``-th of ``world``
      contiguous blocks (sizes differing by at most one, no duplicates), so the shards gathered in rank order
      (``all_gather_concat``) are the dataset in its own order;
    * ``set_epoch(e, skip=k)``: the next iteration starts at this rank's ``k``-th sample (the Trainer does this).

    With ``yield_seeds=True`` it yields ``(index, sample_seed)`` pairs where ``sample_seed`` depends only on
    ``(seed, epoch, global position)``; ``make_loader`` wraps the dataset so each sample is produced under that seed.
    """

    def __init__(self, dataset_len: int, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, repeats: int = 1, pad: bool = True, repeat_round: int = 256,
                 yield_seeds: bool = False):
        if dataset_len < 0 or repeats < 1:
            raise ValueError(f"ResumableSampler: bad dataset_len={dataset_len} or repeats={repeats}")
        self.n = int(dataset_len)
        self.shuffle, self.seed, self.repeats, self.pad = shuffle, int(seed), int(repeats), pad
        self.world = int(world_size if world_size is not None else get_world_size())
        self.rank = int(rank if rank is not None else (get_rank() if self.world > 1 else 0))
        self.repeat_round = int(repeat_round)
        self.yield_seeds = yield_seeds
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self._skip = int(epoch), int(skip)

    def _positions(self) -> tuple[list[int], list[int]]:
        """(indices, global positions) of this rank for the current epoch."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.repeats > 1:
            order = [i for i in order for _ in range(self.repeats)]
        if not self.pad and self.repeats == 1:
            start, stop = self._block()
            return order[start:stop], list(range(start, stop))
        total = len(order)
        if self.pad or self.repeats > 1:
            total = int(math.ceil(len(order) / self.world)) * self.world if order else 0
            while len(order) < total:
                order += order[: total - len(order)]
        positions = list(range(self.rank, len(order), self.world))
        if self.repeats > 1:
            keep = 0
            if self.repeat_round > 0:
                keep = int(math.floor(self.n // self.repeat_round * self.repeat_round / self.world))
            if keep <= 0:
                keep = int(math.ceil(self.n / self.world))
            positions = positions[:keep]
        return [order[p] for p in positions], positions

    def _block(self) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous evaluation shard (the first ``n % world`` ranks one longer)."""
        size, extra = divmod(self.n, self.world)
        start = self.rank * size + min(self.rank, extra)
        return start, start + size + (self.rank < extra)

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch (ignores skip)."""
        return self._positions()[0]

    def __iter__(self) -> Iterator:
        idx, pos = self._positions()
        skip, self._skip = self._skip, 0
        idx, pos = idx[skip:], pos[skip:]
        if self.yield_seeds:
            return iter([(i, _mix(self.seed, self.epoch, p, 0x5EED)) for i, p in zip(idx, pos)])
        return iter(idx)

    def __len__(self) -> int:
        if self.repeats > 1:
            per_rank = int(math.ceil(self.n * self.repeats / self.world))
            keep = 0
            if self.repeat_round > 0:
                keep = int(math.floor(self.n // self.repeat_round * self.repeat_round / self.world))
            if keep <= 0:
                keep = int(math.ceil(self.n / self.world))
            return min(per_rank, keep)
        if self.pad:
            return int(math.ceil(self.n / self.world)) if self.n else 0
        start, stop = self._block()
        return stop - start


@contextmanager
def _seeded(seed: int):
    """Seed python/numpy/torch-CPU RNGs with ``seed``; in the main process restore them afterwards."""
    in_worker = get_worker_info() is not None
    if not in_worker:
        saved = (random.getstate(), np.random.get_state(), torch.random.default_generator.get_state())
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if not in_worker:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.default_generator.set_state(saved[2])


class SeededDataset(Dataset):
    """Wraps a map-style dataset; ``ds[(index, seed)]`` returns ``base[index]`` produced under RNG seed ``seed``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            with _seeded(seed):
                return self.base[index]
        return self.base[key]

    def __getattr__(self, name: str):  # forward attributes (e.g. .frame, .label_columns) to the wrapped dataset
        if name == "base" or name.startswith("__"):  # never forward dunders (__getitems__ would bypass seeding)
            raise AttributeError(name)
        return getattr(self.base, name)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, sampler: Sampler | None = None,
                collate_fn: Callable | None = None, drop_last: bool = False, repeats: int = 1,
                num_workers: int = 4, seed: int = 0, train: bool = True, pin_memory: bool | None = None,
                allow_empty_shards: bool = False, **loader_kwargs: Any) -> DataLoader:
    """The DataLoader every method uses (``Trainer.make_loader`` fills ``seed``, ``num_workers``, ``pin_memory``).

    ``train=True`` (default): a :class:`ResumableSampler` (sharded under DDP, ``repeats`` for repeated
    augmentation) yielding per-sample seeds, so random augmentations are identical whatever the number of workers
    or ranks and after a mid-epoch resume. ``train=False``: no shuffling, no padding, sharded over ranks (use
    ``all_gather_concat`` in ``evaluate``); an evaluation split smaller than the world is refused unless
    ``allow_empty_shards`` says the caller's ``evaluate`` copes with a rank that has no sample. A custom
    ``sampler`` is used as is (resume then replays the skipped batches and augmentation is only seeded per worker).
    ``batch_size`` is per process.
    """
    if sampler is None:
        n, world = len(dataset), get_world_size()  # type: ignore[arg-type]
        if not train and not allow_empty_shards and 0 < n < world:
            # a rank without samples would have nothing to gather while the others wait for it
            raise ValueError(f"an evaluation split of {n} samples cannot be shared by {world} processes: use "
                             "fewer processes (--nproc_per_node) or more data")
        sampler = ResumableSampler(n, shuffle=shuffle and train, seed=seed,
                                   repeats=repeats if train else 1, pad=train, yield_seeds=train)
        dataset = SeededDataset(dataset) if train else dataset
    elif repeats != 1:
        raise ValueError("make_loader: repeats only applies to the built-in sampler (sampler=None)")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator()
    generator.manual_seed(_mix(seed, 0xD47A))
    loader_kwargs.setdefault("persistent_workers", num_workers > 0)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_worker_init,
                      generator=generator, **loader_kwargs)


def batch_size(batch: Any) -> int:
    """Leading size of the first tensor in a (nested) batch (its images, for the heartbeat's img/s); 0 if none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 0
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        n = batch_size(value)
        if n:
            return n
    return 0


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors inside (nested) dicts, lists, tuples and namedtuples moved to ``device``; other values untouched.
    Objects with a ``.to(device)`` method (e.g. a tokenizer's BatchEncoding) are moved with it."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
        if type(batch) is dict:
            return moved
        try:
            return type(batch)(moved)
        except Exception:
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    if hasattr(batch, "to") and callable(batch.to) and not isinstance(batch, torch.nn.Module):
        try:
            return batch.to(device)
        except Exception:
            return batch
    return batch
