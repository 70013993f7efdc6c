"""shared.engine — the training-loop pieces all five methods share (plain PyTorch, no Lightning/Accelerate).

Typical ``train.py``::

    from shared.engine import EngineConfig, Trainer, create_run_dir, seed_everything, cosine_schedule

    seed_everything(cfg.engine.seed)                       # before building the model: identical init
    run_dir = create_run_dir("adnet", "nih_convnext", root="runs", resume=args.resume)
    model = build_model(cfg); opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    trainer = Trainer(model, opt, cfg.engine, run_dir, loss_fn=loss_fn, evaluate=evaluate,
                      scheduler=None, scheduler_interval="iter", config=cfg)
    train_loader = trainer.make_loader(train_set, batch_size=32, shuffle=True, drop_last=True)
    trainer.scheduler = cosine_schedule(opt, total_steps=cfg.engine.epochs * len(train_loader) // cfg.engine.grad_accum,
                                        min_lr=1e-6, warmup_steps=500)   # or pass it to Trainer(...)
    best = trainer.fit(train_loader)                      # resumes from run_dir/checkpoints/last.pt if present
    model = trainer.best_model()                          # best.pt's winning weights (EMA/raw), eval mode
    trainer.validate_checkpoint()                         # evaluate() on best.pt's weights again, one process

Contract
--------
* ``loss_fn(model, batch) -> (loss, {name: float})``: ``batch`` is already on ``trainer.device`` (tensors inside
  dicts / lists / tuples are moved); ``model`` is what to call for the forward pass (the DDP wrapper under
  torchrun — use ``unwrap_model(model)`` to reach attributes); runs under autocast when ``amp`` is on. The engine
  divides the loss by the accumulation group size itself. The logged dict is averaged over ``log_every`` steps.
* ``evaluate(model) -> {name: float} | None``: called on every rank under ``torch.no_grad()``, model in eval mode
  (then back to train). With EMA on, it is called on the EMA model and on the raw model, logged as
  ``ema/<name>`` and ``raw/<name>``; the plain ``<name>`` keys (what ``monitor`` sees) hold the selected model's
  metrics: ``ema_select="ema"`` (default) the EMA model, ``"raw"`` the raw one, ``"best"`` whichever scores better
  on ``monitor`` at that validation (ADNet: "both are evaluated, the best is kept"); ``selected_ema`` is 1/0 and
  best.pt records ``best_source`` so ``best_model()`` / ``weights_from_checkpoint`` load the winning weights.
  Rank 0's dict is broadcast, so best-checkpoint and early-stop decisions agree on all ranks.
  Validation runs every ``val_every_iters`` optimizer steps (0: at each epoch end) and once more at the end
  of training if the last step was not validated. ``evaluate=None``: no validation, best.pt = final weights.
  For multi-rank evaluation use ``trainer.make_loader(val_set, bs, train=False)`` (sharded, no padding) and
  ``all_gather_concat(tensor)`` on predictions/targets.
* ``scheduler_interval``: ``"iter"`` (``step()`` after each optimizer step), ``"epoch"`` (after each epoch),
  ``"plateau"`` (``step(monitor_value)`` after each validation).
* ``trainable_filter(name, param) -> bool``: parameters for which it returns False get ``requires_grad=False``.
* ``on_epoch_start(trainer)`` (optional): called before each epoch (and again when a run resumes mid-epoch), e.g.
  to unfreeze a backbone from epoch N; it must depend only on ``trainer.epoch`` so resume stays exact.
* ``ddp_kwargs`` (optional): extra DistributedDataParallel arguments, e.g. ``{"find_unused_parameters": True}``.
* Multi-stage methods (e.g. AG-CNN global -> local -> fusion): one Trainer per stage with ``run_dir / "<stage>"``.
* ``max_iters`` > 0 stops after that many optimizer steps (whichever comes first with ``epochs``).
  ``grad_accum``: an optimizer step every ``grad_accum`` batches; the last group of an epoch may be shorter
  (its loss is averaged over its own size). ``amp``: ``bf16`` (autocast, no scaler) or ``fp16`` (autocast +
  GradScaler, CUDA only; on CPU it falls back to ``none`` with a warning). ``clip_grad_norm`` clips after
  unscaling. ``ema_decay`` > 0: :class:`ModelEMA` updated after every optimizer step.
* Seeding: ``fit`` calls ``seed_everything(seed + rank, deterministic)`` at its start (a resumed run then
  restores the RNG states of the checkpoint). Call ``seed_everything(seed)`` yourself before building the model.
  ``deterministic: true`` (default) = ``use_deterministic_algorithms(warn_only=True)``, cudnn deterministic and
  no cudnn benchmark; set ``engine.deterministic: false`` for full GPU speed when bitwise repeatability on the GPU
  does not matter.
* NaN/inf loss: stop before the backward pass, log an error, raise :class:`NonFiniteLossError`; ``last.pt`` is
  untouched (the last good state). Non-finite gradients of a finite loss stop the same way before the optimizer
  step (without fp16's loss scaler; with it they make the scaler skip the step, and a skipped step advances
  neither the LR schedule nor the EMA).

Data loading and exact resume
-----------------------------
Build the train loader with ``trainer.make_loader(dataset, batch_size, shuffle=True, collate_fn=None,
drop_last=False, repeats=1)``: a :class:`ResumableSampler` (seeded per-epoch order, sharded over ranks under
torchrun, ``repeats=3`` = repeated augmentation as in timm's RepeatAugSampler) and a dataset wrapper that
produces every sample under its own RNG seed (from seed, epoch, position) — so random augmentations using
``random``/``numpy``/``torch`` global RNGs are identical whatever ``num_workers``, world size or resume point
(a private ``np.random.default_rng()`` without a seed is not covered — draw from the global RNGs).
The loader gets its own generator, pin_memory on CUDA and persistent workers. On resume the sampler skips the
batches already consumed. ``batch_size`` is per process: 2 ranks x 4 see exactly the batches of 1 rank x 8.
Loaders built otherwise still work (``set_epoch`` is called when the sampler has it) but a mid-epoch resume
replays the consumed batches and is exact only if their order does not depend on global RNG state.

Run directory and files
-----------------------
``create_run_dir(method, config_name, root="runs", resume=None)`` -> ``root/method/config_name/YYYYmmdd-HHMMSS/``
(``-1``, ``-2`` suffix on collision; under torchrun rank 0 creates it and broadcasts it). ``resume=<dir>``
returns that directory (a missing one is an error, never a new run); ``resume="latest"`` the newest run of that
method/config with a ``checkpoints/last.pt``; an unwritable ``root`` is one error naming ``root_key``. Any start
in a run directory (``create_run_dir(resume=...)``, ``Trainer.fit``) removes the ``checkpoints/.*.tmp`` files of a
save a kill interrupted (``remove_orphaned_temp_files``). Resuming with a different config or loader shape (batch
size, grad_accum, batches per epoch) logs a warning; ``config.yaml`` keeps the config of the first start and the
changed keys are appended to ``config_overrides.yaml`` (``record_config``). A failed checkpoint write (full disk,
read-only folder) is a ``CheckpointWriteError`` naming the file and the free space; the old file stays. The
Trainer writes ``config.yaml`` (from ``config=``), ``log.txt`` (human),
``metrics.jsonl`` (one JSON object per event: ``step`` (optimizer steps), ``epoch`` (0-based), ``split``
(``train``/``val``/...), ``time`` and the values; NaN written as null; train events carry ``loss``, the
``loss_fn`` logs and ``lr``), optional ``tensorboard/`` and visdom (env ``VISDOM_SERVER``/``VISDOM_PORT``; never
blocks, disabled with a warning when unavailable), and ``checkpoints/last.pt`` (every ``ckpt_every_iters``
steps, each epoch end, the end of training) and ``checkpoints/best.pt`` (each time ``monitor`` improves).
A resumed run drops the metrics.jsonl events written after its checkpoint. Only rank 0 writes.

Checkpoints (``torch.load(path, weights_only=True)`` always works)::

    {"format": 1, "model": state_dict (unwrapped), "ema": state_dict | None, "optimizer", "scheduler", "scaler",
     "epoch", "step_in_epoch" (batches consumed in that epoch), "global_step", "best_metric", "best_metrics",
     "bad_evals", "last_val_step", "stopped", "log_window", "rng": {torch, numpy, python, cuda?},
     "rng_per_rank" (DDP), "world_size", "loader_shape", "config": plain dict, "engine": EngineConfig as dict, "metrics": last val,
     "best_source": "ema" | "raw" (best.pt only, when EMA is on)}

``save_checkpoint(obj, path)`` writes atomically (temp file in the same directory + fsync + ``os.replace``);
``load_checkpoint(path)`` loads with ``weights_only=True`` and raises :class:`CheckpointError` naming the file;
``load_model_weights(model, state_dict_or_checkpoint, strict=True, key_map=None)`` strips ``module.`` /
``_orig_mod.`` prefixes and raises :class:`WeightsMismatchError` listing missing, unexpected and wrongly shaped
keys; ``weights_from_checkpoint(ckpt)`` picks the weights to evaluate (``best_source``, else EMA when present).

Other helpers: ``select_device``, ``is_main_process``, ``get_rank``, ``get_world_size``, ``init_distributed``
(torchrun env vars; gloo on CPU, nccl on CUDA), ``all_gather_concat``, ``all_gather_object``, ``broadcast_object``,
``barrier``, ``unwrap_model``, ``move_to_device``, ``ModelEMA(model, decay)``, ``cosine_schedule(opt, total_steps,
min_lr, warmup_steps)`` (per iteration), ``step_schedule(opt, step_epochs, gamma)`` (per epoch; int or milestones).
"""
from .checkpoint import (CheckpointError, CheckpointWriteError, LoadResult, WeightsMismatchError, get_rng_state, load_checkpoint,
                         load_model_weights, save_checkpoint, set_rng_state, weights_from_checkpoint)
from .config import EngineConfig
from .data import ResumableSampler, SeededDataset, make_loader, move_to_device
from .distributed import (all_gather_concat, all_gather_object, barrier, broadcast_object, get_rank, get_world_size,
                          init_distributed, is_distributed, is_main_process, unwrap_model)
from .ema import ModelEMA
from .logger import RunLogger
from .schedules import cosine_schedule, step_schedule
from .trainer import (NonFiniteLossError, Trainer, create_run_dir, record_config, remove_orphaned_temp_files,
                      seed_everything, select_device)

__all__ = [
    "EngineConfig", "Trainer", "create_run_dir", "save_checkpoint", "load_checkpoint", "load_model_weights",
    "weights_from_checkpoint", "seed_everything", "select_device", "is_main_process", "ModelEMA",
    "cosine_schedule", "step_schedule", "ResumableSampler", "SeededDataset", "make_loader", "move_to_device",
    "NonFiniteLossError", "CheckpointError", "WeightsMismatchError", "LoadResult", "all_gather_concat",
    "all_gather_object",
    "broadcast_object", "barrier", "get_rank", "get_world_size", "init_distributed", "is_distributed",
    "unwrap_model", "get_rng_state", "set_rng_state", "RunLogger", "CheckpointWriteError", "record_config",
    "remove_orphaned_temp_files",
]
