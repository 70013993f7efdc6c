"""``Trainer``: the plain-PyTorch training loop shared by all methods, plus run-directory and seeding helpers."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import (get_rng_state, load_checkpoint, load_model_weights, save_checkpoint, set_rng_state,
                         to_plain, weights_from_checkpoint)
from .config import EngineConfig
from .data import ResumableSampler, batch_size, make_loader, move_to_device
from .distributed import (all_gather_object, all_reduce_max, barrier, broadcast_object, get_local_rank, get_rank,
                          get_world_size, init_distributed, is_distributed, is_main_process, unwrap_model)
from .ema import ModelEMA
from .logger import RunLogger
from shared.progress import Progress

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """The training loss or its gradients became NaN/inf. ``checkpoints/last.pt`` still holds the last good state."""


# --------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU + all GPUs); with ``deterministic`` also ask torch for deterministic
    kernels (``use_deterministic_algorithms(warn_only=True)``, cudnn deterministic, no cudnn benchmark)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _deterministic_algorithms()
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        with contextlib.suppress(Exception):  # a NaN-fill of every torch.empty buys nothing for correct code
            importlib.import_module("torch.utils.deterministic").fill_uninitialized_memory = False


def _deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without importing torch._inductor (whose
    import costs seconds) when nothing has imported it yet; torch.compile users get the public call."""
    if torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled():
        return
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if "torch._inductor.config" in sys.modules or setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    try:
        setter(True, warn_only=True)
    except TypeError:
        torch.use_deterministic_algorithms(True, warn_only=True)


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if available else ``cpu``; ``cuda`` means ``cuda:LOCAL_RANK`` under torchrun."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} requested but CUDA is not available (use device: auto or cpu)")
        if spec == "cuda":
            return torch.device("cuda", get_local_rank() if is_distributed() or "LOCAL_RANK" in os.environ else 0)
    return torch.device(spec)


def create_run_dir(method: str, config_name: str, root: str | Path = "runs", resume: str | Path | None = None,
                   root_key: str = "runs_root") -> Path:
    """``root/method/config_name/YYYYmmdd-HHMMSS/`` (with ``checkpoints/``), or ``resume`` when given.

    ``resume``: an existing run directory (a missing one is a FileNotFoundError: a mistyped path never starts a
    new run), or ``"latest"`` for the newest such run under ``root/method/config_name``
    (its orphaned temp files are removed). ``root_key``: the config key of ``root``, named when it is not writable.
    Under torchrun, initialises the process group and broadcasts rank 0's directory to every rank.
    """
    init_distributed()
    if resume is not None and str(resume) == "latest":
        found = None
        if is_main_process():
            base = Path(root) / method / config_name
            runs = sorted(p for p in base.glob("*") if (p / "checkpoints" / "last.pt").is_file()) \
                if base.is_dir() else []
            found = str(runs[-1]) if runs else None
        found = broadcast_object(found)
        if found is None:
            raise FileNotFoundError(f"resume=latest: no run with checkpoints/last.pt under "
                                    f"{Path(root) / method / config_name}")
        resume = found
    if resume is not None:
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory to resume not found: {path}; give a run directory written by "
                                    f"this method's train (under {Path(root) / method / config_name}) or "
                                    "--resume latest")
        if is_main_process():
            remove_orphaned_temp_files(path)
        barrier()
        return path
    path_str = None
    if is_main_process():
        path_str = str(_new_run_dir(Path(root) / method / config_name, root_key))
    return Path(broadcast_object(path_str))


def _new_run_dir(base: Path, root_key: str) -> Path:
    """``base/<timestamp>[-n]/checkpoints``; an unwritable root is one error naming it and ``root_key``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = base / stamp, 1
    try:
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                path, n = base / f"{stamp}-{n}", n + 1
        (path / "checkpoints").mkdir()
    except OSError as err:
        raise PermissionError(err.errno, f"cannot create a run directory in {base} ({err.strerror}): set "
                              f"{root_key} to a writable folder (--set {root_key}=DIR)") from err
    return path


def remove_orphaned_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint saves a kill interrupted (``checkpoints/.*.tmp`` anywhere under
    ``run_dir``: AG-CNN keeps one checkpoints/ per stage); returns what was removed."""
    removed = []
    for stale in Path(run_dir).glob("**/checkpoints/.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def record_config(run_dir: str | Path, config: Mapping) -> None:
    """Write ``run_dir/config.yaml`` on the first start. Later starts (``--resume``) with a different config leave
    it alone — it describes the training that produced the checkpoints — and append the changed keys, with the
    time, to ``config_overrides.yaml`` beside it."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return
    original = yaml.safe_load(path.read_text()) or {}
    changes = _diff_keys(original, config)
    if changes:
        with open(path.with_name("config_overrides.yaml"), "a", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump([{"time": time.strftime("%Y-%m-%d %H:%M:%S"), "changed": changes}],
                                    sort_keys=False))


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except Exception:
        return False


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _plain_config(config: Any) -> dict | None:
    if config is None:
        return None
    plain = to_plain(config)
    return plain if isinstance(plain, dict) else {"value": plain}


# ---------------------------------------------------------------------------------------------- Trainer
class Trainer:
    """Plain-PyTorch training loop. See the package docstring (``shared.engine``) for the full contract.

    ``loss_fn(model, batch) -> (loss, {name: float})`` gets the model to call (the DDP wrapper under torchrun;
    use ``unwrap_model(model)`` for attributes) and the batch already on ``trainer.device``; it runs under
    autocast when AMP is on. ``evaluate(model) -> {name: float} | None`` runs under ``torch.no_grad()`` with the
    model in eval mode on every rank.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 cfg: EngineConfig | Mapping | None, run_dir: str | Path,
                 loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]],
                 evaluate: Callable[[torch.nn.Module], Mapping[str, float] | None] | None = None,
                 scheduler: Any = None, scheduler_interval: str = "iter", config: Any = None,
                 trainable_filter: Callable[[str, torch.nn.Parameter], bool] | None = None,
                 ddp_kwargs: Mapping[str, Any] | None = None,
                 on_epoch_start: Callable[["Trainer"], None] | None = None):
        if cfg is None:
            cfg = EngineConfig()
        elif isinstance(cfg, Mapping):
            cfg = EngineConfig(**cfg)
        if scheduler_interval not in ("iter", "epoch", "plateau"):
            raise ValueError(f"scheduler_interval must be iter, epoch or plateau, got {scheduler_interval!r}")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.loss_fn, self.evaluate = loss_fn, evaluate
        self.optimizer, self.scheduler, self.scheduler_interval = optimizer, scheduler, scheduler_interval
        self.config = _plain_config(config)
        self.on_epoch_start = on_epoch_start

        self.distributed = init_distributed()
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        self.device = select_device(cfg.device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        self.logger = RunLogger(self.run_dir, main=self.is_main, tensorboard=cfg.tensorboard, visdom=cfg.visdom)

        self.amp = cfg.amp
        if self.amp == "fp16" and self.device.type != "cuda":
            self.logger.warn(f"amp=fp16 needs CUDA; running on {self.device} without AMP (amp=none)")
            self.amp = "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None

        model = unwrap_model(model)
        model.to(self.device)
        if trainable_filter is not None:
            for name, p in model.named_parameters():
                if not trainable_filter(name, p):
                    p.requires_grad_(False)
        self.model = model
        self.ema = ModelEMA(model, cfg.ema_decay, device=self.device) if cfg.ema_decay > 0 else None
        if self.distributed:
            kwargs = dict(ddp_kwargs or {})
            if self.device.type == "cuda":
                kwargs.setdefault("device_ids", [self.device.index])
            self.train_model: torch.nn.Module = DistributedDataParallel(model, **kwargs)
        else:
            self.train_model = model

        # progress state (saved in checkpoints)
        self.epoch = 0
        self.step_in_epoch = 0          # batches (micro-batches) of the current epoch already consumed
        self.global_step = 0            # optimizer steps
        self.best_metric: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}
        self.bad_evals = 0
        self.last_val_step = -1
        self.stopped = False            # early stop triggered
        self._window: dict[str, Any] = {"n": 0, "sums": {}}
        self._loader_shape: tuple = (None, cfg.grad_accum, None)
        self._resumed_shape: tuple | None = None

    # ----------------------------------------------------------------------------------------- public
    def make_loader(self, dataset, batch_size: int, shuffle: bool = True, sampler=None, collate_fn=None,
                    drop_last: bool = False, repeats: int = 1, train: bool = True, **kwargs):
        """The one way to build loaders: see :func:`shared.engine.data.make_loader` (seed, workers, pin_memory,
        DDP sharding filled in from this trainer). ``train=False`` for evaluation loaders."""
        kwargs.setdefault("num_workers", self.cfg.num_workers)
        kwargs.setdefault("pin_memory", self.device.type == "cuda")
        return make_loader(dataset, batch_size, shuffle=shuffle, sampler=sampler, collate_fn=collate_fn,
                           drop_last=drop_last, repeats=repeats, seed=self.cfg.seed, train=train, **kwargs)

    def steps_per_epoch(self, loader) -> int:
        """Optimizer steps one epoch of ``loader`` takes: ceil(batches / grad_accum) (a short last group steps)."""
        return math.ceil(len(loader) / self.cfg.grad_accum)

    def total_steps(self, loader) -> int:
        """Optimizer steps of the whole run (epochs x steps_per_epoch, capped by max_iters): a schedule's length."""
        total = self.cfg.epochs * self.steps_per_epoch(loader)
        return min(total, self.cfg.max_iters) if self.cfg.max_iters else total

    def autocast(self):
        """The autocast context training uses (a no-op when amp is none); handy inside ``evaluate``."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def log(self, msg: str) -> None:
        self.logger.info(msg)

    def log_metrics(self, split: str, metrics: Mapping[str, Any]) -> None:
        self.logger.metrics(split, self.global_step, self.epoch, dict(metrics))

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    def best_model(self) -> torch.nn.Module:
        """``self.model`` (in place, eval mode) with the winning weights of checkpoints/best.pt (EMA or raw, see
        ``ema_select``); falls back to last.pt when no best.pt exists. Safe to call on one rank only."""
        path = self.best_path if self.best_path.exists() else self.last_path
        ckpt = load_checkpoint(path, map_location=self.device)
        load_model_weights(self.model, weights_from_checkpoint(ckpt, prefer_ema=True))
        return self.model.eval()

    def validate_checkpoint(self, path: str | Path | None = None) -> dict[str, float] | None:
        """``evaluate`` on a checkpoint's winning weights (default best.pt), in this process, without training or
        logging: recomputes what the validation logged for it (a torchrun run's too: tests compare the two)."""
        ckpt = load_checkpoint(path or self.best_path, map_location=self.device)
        load_model_weights(self.model, weights_from_checkpoint(ckpt))
        return self._run_eval(self.model)

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, train_loader) -> dict[str, float]:
        """Train (resuming from checkpoints/last.pt if present); returns the metrics of the best validation."""
        cfg = self.cfg
        rng = self._resume()
        seed_everything(cfg.seed + self.rank, deterministic=cfg.deterministic)
        if rng is not None:
            set_rng_state(rng)
        if self.is_main and self.config is not None:
            record_config(self.run_dir, self.config)
        if rng is None:
            self.logger.info(f"start: device={self.device} world_size={self.world_size} amp={self.amp} "
                             f"torch={torch.__version__} run_dir={self.run_dir}")
            self.logger.info("engine: " + " ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()),
                             console=False)
        try:
            n_batches = len(train_loader)
        except TypeError:
            n_batches = None
        batch_size = getattr(train_loader, "batch_size", None)
        if rng is not None and self._resumed_shape is not None and \
                self._resumed_shape != (batch_size, cfg.grad_accum, n_batches):
            self.logger.warn(f"resuming with (batch_size, grad_accum, batches/epoch) = "
                             f"{(batch_size, cfg.grad_accum, n_batches)} but the checkpoint was written with "
                             f"{self._resumed_shape}: the continuation will not match an uninterrupted run")
        self._loader_shape = (batch_size, cfg.grad_accum, n_batches)
        if n_batches == 0:
            raise ValueError(f"the training split has no batch ({len(getattr(train_loader, 'dataset', []))} samples, "
                             f"batch size {batch_size}, drop_last): check the data's split lists, or lower the "
                             "batch size")
        try:
            while not self._done():
                self._train_epoch(train_loader, n_batches)
            self._finish()
        finally:
            self.logger.close()
        return dict(self.best_metrics)

    def _done(self) -> bool:
        return self.stopped or self.epoch >= self.cfg.epochs or \
            (self.cfg.max_iters > 0 and self.global_step >= self.cfg.max_iters)

    def _epoch_batches(self, loader, epoch: int, start: int):
        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        inner = getattr(batch_sampler, "sampler", None)
        if isinstance(sampler, ResumableSampler) and getattr(loader, "batch_size", None):
            sampler.set_epoch(epoch, skip=start * loader.batch_size)
            return iter(loader)
        for s in (sampler, inner):
            if s is not None and hasattr(s, "set_epoch"):
                s.set_epoch(epoch)
        it = iter(loader)
        if start:
            self.logger.warn(f"resuming mid-epoch by replaying {start} batches: build the loader with "
                             "trainer.make_loader for exact and fast resume")
            for _ in range(start):
                next(it)
        return it

    def _train_epoch(self, loader, n_batches: int | None) -> None:
        cfg, epoch, start = self.cfg, self.epoch, self.step_in_epoch
        accum = cfg.grad_accum
        if self.on_epoch_start is not None:
            self.on_epoch_start(self)   # must depend only on trainer.epoch (it runs again on resume)
        batches = self._epoch_batches(loader, epoch, start)
        self.train_model.train()
        bar = Progress(total=n_batches, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not self.is_main)
        group_loss, group_logs, pending = 0.0, {}, 0
        finished_epoch = True
        try:
            for i, batch in enumerate(batches, start=start):
                group_start = (i // accum) * accum
                group_size = min(accum, n_batches - group_start) if n_batches else accum
                last_in_group = (i + 1 - group_start) == group_size
                batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
                sync = self.train_model.no_sync() if (self.distributed and not last_in_group) else nullcontext()
                with sync:
                    with self.autocast():
                        loss, logs = self.loss_fn(self.train_model, batch)
                    loss_value = float(loss.detach().float().item())
                    bad = 0.0 if math.isfinite(loss_value) else 1.0
                    if all_reduce_max(bad, self._reduce_device()) > 0:
                        self._non_finite(loss_value, i, logs)
                    scaled = loss / group_size
                    (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                group_loss += loss_value / group_size
                for k, v in (logs or {}).items():
                    group_logs[k] = group_logs.get(k, 0.0) + float(v) / group_size
                self.step_in_epoch = i + 1
                pending += 1
                bar.update(1, items=batch_size(batch))
                if not last_in_group:
                    continue
                pending = 0
                self._optimizer_step()
                self._accumulate_window(group_loss, group_logs)
                bar.set_postfix(loss=f"{group_loss:.4g}", refresh=False)
                group_loss, group_logs = 0.0, {}
                end_of_epoch = n_batches is not None and self.step_in_epoch >= n_batches
                if self.global_step % cfg.log_every == 0:
                    self._flush_window()
                if cfg.val_every_iters and self.global_step % cfg.val_every_iters == 0:
                    self._validate()
                if cfg.ckpt_every_iters and self.global_step % cfg.ckpt_every_iters == 0 and not end_of_epoch:
                    self._save_last()
                if self._done():
                    finished_epoch = end_of_epoch
                    break
        finally:
            bar.close()
        if finished_epoch and pending:  # loader without len(): step on the short last group
            # its losses were divided by accum, not by pending: scale the gradients (and logs) up to a mean
            self._optimizer_step(grad_scale=accum / pending)
            self._accumulate_window(group_loss * accum / pending,
                                    {k: v * accum / pending for k, v in group_logs.items()})
        if finished_epoch:
            if cfg.val_every_iters == 0:
                self._validate()
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            self.epoch += 1
            self.step_in_epoch = 0
            self._save_last()

    def _reduce_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _optimizer_step(self, grad_scale: float = 1.0) -> None:
        """One optimizer step on the accumulated gradients. Without a loss scaler, non-finite gradients stop the
        run before they reach the weights (so last.pt stays good); with fp16's scaler they make it skip the step,
        and a skipped step moves neither the LR schedule nor the EMA."""
        cfg = self.cfg
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grad_scale != 1.0:
            torch._foreach_mul_([p.grad for p in params], grad_scale)
        stepped = True
        if self.scaler is not None:
            if cfg.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale   # the scaler lowers its scale exactly when it skipped
        else:
            norm = (torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm) if cfg.clip_grad_norm > 0
                    else torch.nn.utils.get_total_norm([p.grad for p in params]))
            if not math.isfinite(float(norm)):   # gradients are all-reduced: every rank sees the same norm
                self._non_finite(float(norm), self.step_in_epoch - 1, {}, what="gradient norm")
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if not stepped:
            return
        if self.scheduler is not None and self.scheduler_interval == "iter":
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def _accumulate_window(self, loss: float, logs: Mapping[str, float]) -> None:
        w = self._window
        w["n"] += 1
        sums = w["sums"]
        sums["loss"] = sums.get("loss", 0.0) + loss
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v

    def _flush_window(self) -> None:
        w = self._window
        if not w["n"]:
            return
        values = {k: v / w["n"] for k, v in w["sums"].items()}
        values["lr"] = float(self.optimizer.param_groups[0]["lr"])
        self.logger.metrics("train", self.global_step, self.epoch, values, console=not _isatty())
        self._window = {"n": 0, "sums": {}}

    def _non_finite(self, loss_value: float, batch_index: int, logs: Any, what: str = "loss") -> None:
        last = self.last_path if self.last_path.exists() else None
        msg = (f"non-finite {what} ({loss_value}) at epoch {self.epoch}, batch {batch_index}, after optimizer step "
               f"{self.global_step}; logs={dict(logs or {})}; stopping. Last good checkpoint: "
               f"{last if last else 'none written yet'}: lower the learning rate or set engine.clip_grad_norm "
               f"(or amp=none), then resume with --resume {self.run_dir}")
        self.logger.error(msg)
        self.logger.close()
        raise NonFiniteLossError(msg)

    # -------------------------------------------------------------------------------------- validation
    def _run_eval(self, model: torch.nn.Module) -> dict[str, float] | None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = self.evaluate(model)  # type: ignore[misc]
        finally:
            model.train(was_training)
        if out is None:
            return None
        return {k: float(v) for k, v in out.items()}

    def _better(self, value: float | None, than: float | None) -> bool:
        """``value`` strictly better than ``than`` under monitor_mode (non-finite never better; beats None/NaN)."""
        if value is None or not math.isfinite(value):
            return False
        if than is None or not math.isfinite(than):
            return True
        return value > than if self.cfg.monitor_mode == "max" else value < than

    def _is_better(self, value: float) -> bool:
        return self._better(value, self.best_metric)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics): DDP broadcasts them before each
        forward, but the forward then updates them from each rank's own batch, so without this the ranks would
        each evaluate a slightly different model, none of them exactly the one best.pt saves (rank 0's)."""
        if not self.distributed:
            return
        for module in (self.model, self.ema.module if self.ema is not None else None):
            for buffer in (module.buffers() if module is not None else ()):
                torch.distributed.broadcast(buffer.data, src=0)

    def _validate(self) -> None:
        if self.evaluate is None or self.last_val_step == self.global_step:
            return
        self._sync_buffers()
        monitor = self.cfg.monitor
        source = None
        if self.ema is not None:
            ema_metrics = self._run_eval(self.ema.module)
            raw_metrics = self._run_eval(self.model)
            metrics = None
            if ema_metrics is not None:
                source = "ema"
                if raw_metrics is not None and (self.cfg.ema_select == "raw" or (
                        self.cfg.ema_select == "best" and self._better(raw_metrics.get(monitor),
                                                                     ema_metrics.get(monitor)))):
                    source = "raw"
                metrics = dict(raw_metrics if source == "raw" else ema_metrics)
                metrics.update({f"ema/{k}": v for k, v in ema_metrics.items()})
                metrics.update({f"raw/{k}": v for k, v in (raw_metrics or {}).items()})
                metrics["selected_ema"] = float(source == "ema")
        else:
            metrics = self._run_eval(self.model)
        metrics, source = broadcast_object((metrics, source))
        self.last_val_step = self.global_step
        if metrics is None:
            return
        self.last_metrics = metrics
        self.logger.metrics("val", self.global_step, self.epoch, metrics)
        if monitor not in metrics:
            raise KeyError(f"monitor metric {monitor!r} not returned by evaluate(); got: {sorted(metrics)} "
                           "(set engine.monitor)")
        value = metrics[monitor]
        if self.scheduler is not None and self.scheduler_interval == "plateau":
            self.scheduler.step(value)
        if self._is_better(value):
            self.best_metric = value
            self.best_metrics = {**metrics, "step": float(self.global_step), "epoch": float(self.epoch)}
            self.bad_evals = 0
            self.logger.info(f"new best {monitor}={value:.6g} at step {self.global_step} -> {self.best_path}",
                             console=False)
            self._save(self.best_path, best_source=source)
        else:
            self.bad_evals += 1
            if self.cfg.early_stop_patience and self.bad_evals >= self.cfg.early_stop_patience:
                self.logger.info(f"early stop: {monitor} did not improve for {self.bad_evals} validations")
                self.stopped = True

    def _finish(self) -> None:
        if self.evaluate is not None and self.last_val_step != self.global_step:
            self._validate()
        self._save_last()
        have_best = broadcast_object(self.best_path.exists())
        if not have_best and self.evaluate is None:
            self._save(self.best_path)  # no validation: best = final weights, so test scripts always find best.pt
        elif not have_best:
            self.logger.warn("no validation produced a finite monitor value; best.pt not written")
        barrier()
        best = f"{self.cfg.monitor}={self.best_metric:.6g}" if self.best_metric is not None else "n/a"
        self.logger.info(f"done: {self.global_step} optimizer steps, {self.epoch} epochs, best {best}")

    # ------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_metrics": dict(self.best_metrics),
            "bad_evals": self.bad_evals,
            "last_val_step": self.last_val_step,
            "stopped": self.stopped,
            "log_window": {"n": self._window["n"], "sums": dict(self._window["sums"])},
            "rng": get_rng_state(),
            "world_size": self.world_size,
            "loader_shape": list(self._loader_shape),   # (batch_size, grad_accum, batches per epoch)
            "config": self.config,
            "engine": dataclasses.asdict(self.cfg),
            "metrics": dict(self.last_metrics),
        }

    def _save(self, path: Path, best_source: str | None = None) -> None:
        state = self.state_dict()
        if best_source is not None:  # best.pt: which weights scored ("ema" or "raw"); best_model() loads those
            state["best_source"] = best_source
        if self.distributed:  # every rank's RNG, so each rank resumes its own stream
            state["rng_per_rank"] = all_gather_object(state["rng"])
        if self.is_main:
            save_checkpoint(state, path)
        barrier()

    def _save_last(self) -> None:
        self._save(self.last_path)

    def _resume(self) -> dict | None:
        if self.is_main:   # temp files of a save that a kill interrupted, on any start in this directory
            remove_orphaned_temp_files(self.run_dir)
        barrier()
        if not self.last_path.exists():
            return None
        ckpt = load_checkpoint(self.last_path, map_location="cpu")
        load_model_weights(self.model, ckpt["model"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise RuntimeError(f"{self.last_path}: EMA is on but the checkpoint has no EMA weights")
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.step_in_epoch = int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_metric = ckpt.get("best_metric")
        self.best_metrics = dict(ckpt.get("best_metrics") or {})
        self.last_metrics = dict(ckpt.get("metrics") or {})
        self.bad_evals = int(ckpt.get("bad_evals", 0))
        self.last_val_step = int(ckpt.get("last_val_step", -1))
        self.stopped = bool(ckpt.get("stopped", False))
        shape = ckpt.get("loader_shape")
        self._resumed_shape = tuple(shape) if shape is not None else None
        if self.config is not None and ckpt.get("config") is not None and ckpt["config"] != self.config:
            diff = _diff_keys(ckpt["config"], self.config)
            self.logger.warn(f"resuming {self.last_path} with a different config: {', '.join(diff[:12])}"
                             + (f" (+{len(diff) - 12} more)" if len(diff) > 12 else ""))
        window = ckpt.get("log_window") or {"n": 0, "sums": {}}
        self._window = {"n": int(window["n"]), "sums": dict(window["sums"])}
        dropped = self.logger.truncate_after(self.global_step)
        self.logger.info(f"resumed from {self.last_path}: epoch {self.epoch}, batch {self.step_in_epoch}, "
                         f"step {self.global_step}" + (f" ({dropped} later metric events dropped)" if dropped else ""))
        per_rank = ckpt.get("rng_per_rank")
        if per_rank is not None and len(per_rank) == self.world_size:
            return per_rank[self.rank]
        if self.world_size != int(ckpt.get("world_size", 1)):
            self.logger.warn(f"resuming with world_size={self.world_size} from a checkpoint written with "
                             f"world_size={ckpt.get('world_size')}: the data order will differ")
        return ckpt["rng"]
