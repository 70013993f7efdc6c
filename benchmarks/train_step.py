"""GPU memory and throughput of one training step and one evaluation forward of every method's reproduce configs.

    python -m benchmarks.train_step [--methods adnet ham ...] [--configs nih_convnext v6 ...] [--cap-gib 24]
                                    [--steps 10] [--warmup 3] [--out FILE.md] [--json FILE.json] [--smoke]

For each reproduce config (every ``<method>/configs/*.yaml`` except demo, bases and examples) the method's own
builders make the model, optimizer and loss from the config (``shared.config.load_config`` + the method's config
dataclass), with random weights (no pretrained files) and random tensors of the published shapes as the batch (no
dataset, no loader). It measures, on CUDA:

* a full optimizer step as ``shared.engine.Trainer`` runs it: ``engine.grad_accum`` micro-batches of
  ``batch_size`` under the config's AMP (fp16 with a GradScaler), loss / accum backward, clipping when configured,
  optimizer step, EMA update when configured; ``engine.deterministic`` applied as the engine applies it;
* the evaluation forward the method's validation runs (no_grad, eval mode, its eval batch size, autocast where
  the method's evaluate uses it);
* peak ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` over both (validation runs inside the training
  process, with the optimizer state resident) and images/s of each, warm-up steps excluded, synchronised.

Throughput is also printed as a ratio against a baseline measured in the same run with the same AMP (timm
ResNet-50, 224 px, batch 32, BCE, AdamW): machines and drivers differ, ratios travel better. ``--cap-gib 24``
limits this process's CUDA caching allocator to 24 GiB (``set_per_process_memory_fraction``), so the 24 GiB claim
is checked on a bigger card: an out-of-memory error is reported as such. The CUDA context (~0.3-0.6 GiB) is outside
both the cap and the numbers.

Without CUDA (or with ``--smoke``) everything runs tiny (batch 2, 64 px, 1 step, no AMP) to show that the script
and the methods' builders work; those numbers are NOT measurements and the memory columns are empty.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("adnet", "ham", "agcnn", "chextriev", "cxrclip")
GIB = 1024 ** 3
SMOKE = {"batch": 2, "size": 64, "max_length": 16, "accum": 2}   # tiny shapes of --smoke


# ------------------------------------------------------------------------------------------ what is measured
@dataclass
class Workload:
    """One row: a model + optimizer + loss in the state one training phase of a config trains it."""

    model: "torch.nn.Module"
    optimizer: "torch.optim.Optimizer"
    loss_fn: Callable            # (model, batch) -> (loss, logs), the method's own loss function
    make_batch: Callable         # (n) -> batch dict of random tensors on the device (one micro-batch)
    eval_fn: Callable            # (model, batch) -> outputs: the method's evaluation forward
    batch_size: int              # micro-batch
    eval_batch_size: int
    size: str                    # input shape as shown in the table
    phase: str = ""              # "stage1_global", "cached features", ...
    eval_amp: bool = True        # the method's evaluate() runs under autocast
    make_eval_batch: Callable | None = None   # when evaluation inputs differ from training ones (ADNet's test size)


@dataclass
class Loop:
    """The engine settings of a config that change the cost of a step."""

    amp: str = "none"
    grad_accum: int = 1
    clip_grad_norm: float = 0.0
    ema_decay: float = 0.0
    deterministic: bool = True
    seed: int = 42

    @classmethod
    def of(cls, engine) -> "Loop":
        return cls(engine.amp, engine.grad_accum, engine.clip_grad_norm, engine.ema_decay, engine.deterministic,
                   engine.seed)


@dataclass
class Row:
    method: str
    configs: list[str]
    phase: str = ""
    batch: str = ""
    size: str = ""
    amp: str = ""
    params_m: float = float("nan")
    trainable_m: float = float("nan")
    train_peak_alloc_gib: float | None = None
    train_peak_reserved_gib: float | None = None
    eval_peak_alloc_gib: float | None = None
    eval_peak_reserved_gib: float | None = None
    train_ips: float | None = None
    eval_ips: float | None = None
    train_ratio: float | None = None
    eval_ratio: float | None = None
    fits: str = ""
    error: str = ""
    baseline_key: tuple = ()

    @property
    def peak_alloc(self) -> float | None:
        vals = [v for v in (self.train_peak_alloc_gib, self.eval_peak_alloc_gib) if v is not None]
        return max(vals) if vals else None

    @property
    def peak_reserved(self) -> float | None:
        vals = [v for v in (self.train_peak_reserved_gib, self.eval_peak_reserved_gib) if v is not None]
        return max(vals) if vals else None


# ------------------------------------------------------------------------------------------------- configs
def config_class(method: str):
    import importlib
    name = {"adnet": "ADNetConfig", "ham": "HAMConfig", "agcnn": "Config", "chextriev": "ChextrievConfig",
            "cxrclip": "TrainConfig"}[method]
    return getattr(importlib.import_module(f"{method}.config"), name)


def reproduce_configs(method: str) -> list[Path]:
    """The method's published-setting configs: every YAML except demo, bases (``base``, ``*_base``, ``_*``) and
    examples."""
    out = []
    for path in sorted((ROOT / method / "configs").glob("*.yaml")):
        s = path.stem
        if s in ("demo", "base") or s.startswith("_") or s.endswith("_base") or "example" in s:
            continue
        out.append(path)
    return out


def signature(method: str, cfg) -> str:
    """What decides a config's cost; configs with the same signature are measured once (HAM's five folds ...)."""
    d = dataclasses.asdict(cfg)
    drop = {"name", "published_key", "runs_root", "runs", "output_root", "eval", "test"}
    keep = {k: v for k, v in d.items() if k not in drop}
    # data roots / files / split lists do not change shapes; what the data section sizes does
    data = keep.get("data", {})
    keep["data"] = {k: v for k, v in data.items() if not any(w in k for w in ("root", "csv", "path", "prepared",
                                                                               "tokenizer", "cache_dir", "seed"))
                    and k not in ("train", "val", "test", "val_boxes", "test_boxes", "fold", "split",
                                  "honest_validation", "val_fraction", "on_missing", "split_root", "imagesets",
                                  "boxes", "limit_train", "limit_test", "max_images")}
    if method == "cxrclip":   # sources only change the texts, not their padded length
        keep["data"].pop("sources", None)
    keep.get("engine", {}).pop("epochs", None)
    for k in ("num_workers", "log_every", "monitor", "monitor_mode", "val_every_iters", "ckpt_every_iters",
              "early_stop_patience", "max_iters", "tensorboard", "visdom", "ema_select"):
        keep.get("engine", {}).pop(k, None)
    if method == "ham":
        keep["data"]["box_supervised"] = bool(data.get("train_boxes"))
    return json.dumps(keep, sort_keys=True, default=str)


def load(method: str, path: Path):
    from shared.config import load_config
    return load_config(config_class(method), path)


# -------------------------------------------------------------------------------------- per-method builders
def _labels(n: int, c: int, device) -> "torch.Tensor":
    import torch
    y = (torch.rand(n, c, device=device) < 0.3).float()
    y[:, 0] = 1.0   # every sample has a finding (HAM's anomaly target, CheXtriev's triplets)
    return y


def adnet_workloads(cfg, device, smoke: bool) -> Iterator[Workload]:
    import torch
    from adnet.data import label_names
    from adnet.evaluate import build_from_config
    from adnet.train import bce_loss

    if smoke:   # a 4x4 spectrum crop: ADNet's minimum input is 16 (dft_size - 1) px
        cfg.model.dft_size = 4
        cfg.data.train_size = cfg.data.test_size = SMOKE["size"]
        cfg.data.batch_size = cfg.data.eval_batch_size = SMOKE["batch"]
    classes = len(label_names(cfg.data))
    model, _ = build_from_config(cfg, classes, load_pretrained=False)
    model.to(device)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                            weight_decay=o.weight_decay)
    d = cfg.data

    def batch(n, size=d.train_size):
        return {"image": torch.randn(n, 3, size, size, device=device), "labels": _labels(n, classes, device)}

    yield Workload(model, opt, bce_loss, batch, lambda m, b: torch.sigmoid(m(b["image"]).float()),
                   d.batch_size, d.eval_batch_size, f"{d.train_size} / test {d.test_size}",
                   make_eval_batch=lambda n: batch(n, d.test_size))


def ham_workloads(cfg, device, smoke: bool) -> Iterator[Workload]:
    import torch
    from ham.config import build_model
    from ham.data import class_names
    from ham.train import make_loss_fn

    d = cfg.data
    if smoke:
        d.img_size = SMOKE["size"]
        cfg.optim.batch_size = cfg.optim.eval_batch_size = SMOKE["batch"]
    cfg.model.pretrained, cfg.model.pretrained_path = False, None
    classes = len(class_names(d))
    model = build_model(cfg.model, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    boxes = bool(d.train_boxes)   # box-supervised configs: half of each batch carries masks (the mask losses run)
    s = d.img_size

    def batch(n):
        labels = _labels(n, classes, device)
        flag = torch.zeros(n, device=device)
        has_box = torch.zeros(n, classes, device=device)
        masks = torch.zeros(n, classes, s, s, dtype=torch.uint8, device=device) if boxes else \
            torch.zeros(n, 0, dtype=torch.uint8, device=device)
        if boxes:
            flag[: max(1, n // 2)] = 1.0
            has_box[flag > 0] = labels[flag > 0]
            masks[..., s // 4: s // 2, s // 4: s // 2] = (has_box[:, :, None, None] > 0).to(torch.uint8)
        bbox_tag = torch.where(flag[:, None] > 0, has_box, labels)
        return {"image": torch.randn(n, 3, s, s, device=device), "labels": labels, "masks": masks, "flag": flag,
                "bbox_tag": bbox_tag, "has_box": has_box}

    # evaluation: the localisation forward (refined, image-size CAMs of every class), HAM's larger one
    yield Workload(model, opt, make_loss_fn(cfg), batch, lambda m, b: m(b["image"], refine=True),
                   cfg.optim.batch_size, cfg.optim.eval_batch_size,
                   f"{s}" + (" + box masks" if boxes else ""))


def agcnn_workloads(cfg, device, smoke: bool) -> Iterator[Workload]:
    import torch
    from agcnn.train import branches_for, build_model, make_loss, make_optimizer, stage_plan

    if smoke:
        cfg.data.image_size = cfg.model.crop_size = SMOKE["size"]
        for st in (cfg.train.global_stage, cfg.train.local_stage, cfg.train.fusion_stage, cfg.train.joint_stage):
            st.batch_size = SMOKE["batch"]
        cfg.train.eval_batch_size = SMOKE["batch"]
    cfg.model.pretrained, cfg.model.pretrained_path, cfg.model.seed_fusion_fc = False, None, None
    model = build_model(cfg).to(device)
    s, c = cfg.data.image_size, cfg.model.num_classes

    def batch(n):
        return {"image": torch.randn(n, 3, s, s, device=device), "labels": _labels(n, c, device)}

    for stage in stage_plan(cfg):
        model.set_trainable(stage.parts)
        params = [p for p in model.parameters() if p.requires_grad]
        branches = branches_for(stage)
        crop = "" if branches == ("global",) else f" + crop {cfg.model.crop_size}"
        yield Workload(model, make_optimizer(cfg, params, stage.cfg), make_loss(stage), batch,
                       lambda m, b, br=branches: m(b["image"], branches=br), stage.cfg.batch_size,
                       cfg.train.eval_batch_size, f"{s}{crop}", phase=stage.dirname)


def chextriev_workloads(cfg, device, smoke: bool) -> Iterator[Workload]:
    import torch
    from chextriev.losses import compute_loss
    from chextriev.models import build_model
    from chextriev.train import frozen_cnn, input_mode, make_optimizer, uses_cache

    d, m = cfg.data, cfg.model
    if smoke:
        d.crop_size = d.image_size = 32
        m.ath_input_size = 32
        d.batch_size = d.eval_batch_size = SMOKE["batch"]
    m.pretrained, m.pretrained_path = False, None
    adjacency = None
    if m.adjacency == "cooccurrence":   # a binary 18x18 co-occurrence graph with its unit diagonal
        g = torch.Generator().manual_seed(0)
        adjacency = (torch.rand(m.num_nodes, m.num_nodes, generator=g) < 0.5).float()
        adjacency = ((adjacency + adjacency.T) > 0).float().fill_diagonal_(1.0)
    model = build_model(m, adjacency).to(device)
    opt, _, _ = make_optimizer(cfg, model)
    mode, size = input_mode(cfg)
    c, nodes = m.num_classes, m.num_nodes

    def loss_fn(mod, b):
        return compute_loss(m.name, mod(b["x"]), b, cfg.loss.graph_importance, cfg.loss.triplet_weight)

    def batch_of(x_shape, dtype=torch.float32):
        def make(n):
            return {"x": torch.randn(n, *x_shape, device=device, dtype=dtype), "labels": _labels(n, c, device),
                    "node_labels": _labels(n * nodes, c, device).view(n, nodes, c)}
        return make

    pixels = (3, size, size) if mode == "image" else (nodes, 3, size, size)
    shown = f"{size}" if mode == "image" else f"{nodes} crops x {size}"
    eval_fn = lambda mod, b: mod(b["x"])  # noqa: E731
    if uses_cache(cfg):
        f = frozen_cnn(model).num_features
        feats = (f,) if mode == "image" else (nodes, f)
        yield Workload(model, opt, loss_fn, batch_of(feats), eval_fn, d.batch_size, d.eval_batch_size,
                       f"cached {'x'.join(map(str, feats))} features", phase="cached features", eval_amp=False)
    yield Workload(model, opt, loss_fn, batch_of(pixels), eval_fn, d.batch_size, d.eval_batch_size, shown,
                   phase="" if m.name == "ath" else "full (frozen CNN)", eval_amp=False)


def cxrclip_workloads(cfg, device, smoke: bool) -> Iterator[Workload]:
    import torch
    from cxrclip.loss import CXRClipLoss
    from cxrclip.model import CXRClip
    from cxrclip.train import clip_step

    d = cfg.data
    if smoke:
        # HF Swin-T (window 7) needs 224 px: at 64 px its last stage (2 x 2) is smaller than a window
        d.image_size = 224 if cfg.model.image.name == "swin" else SMOKE["size"]
        d.max_length = SMOKE["max_length"]
        d.batch_size = d.eval_batch_size = SMOKE["batch"]
    cfg.model.image.pretrained = None
    cfg.model.text.pretrained = None
    vocab = int(cfg.model.text.bert.setdefault("vocab_size", 28996))   # Bio_ClinicalBERT's WordPiece vocabulary
    model = CXRClip(cfg.model).to(device)
    criterion = CXRClipLoss(cfg.loss.i2i_weight, cfg.loss.t2t_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    s, length = d.image_size, d.max_length

    def batch(n):   # n pairs: two views of images and two texts each, texts padded to max_length
        return {"images": torch.randn(2 * n, 3, s, s, device=device),
                "input_ids": torch.randint(1000, vocab, (2 * n, length), device=device),
                "attention_mask": torch.ones(2 * n, length, dtype=torch.long, device=device)}

    yield Workload(model, opt, lambda mod, b: clip_step(mod, b, criterion), batch,
                   lambda mod, b: clip_step(mod, b, criterion), d.batch_size, d.eval_batch_size,
                   f"2 x {s} + 2 x {length} tokens", eval_amp=False)


BUILDERS = {"adnet": adnet_workloads, "ham": ham_workloads, "agcnn": agcnn_workloads,
            "chextriev": chextriev_workloads, "cxrclip": cxrclip_workloads}


def baseline_workload(device, smoke: bool) -> Workload:
    """timm ResNet-50, 224 px, batch 32, 14 sigmoid outputs, AdamW: the same-run yardstick."""
    import timm
    import torch
    import torch.nn.functional as F
    n, s = (SMOKE["batch"], SMOKE["size"]) if smoke else (32, 224)
    model = timm.create_model("resnet50", pretrained=False, num_classes=14).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def loss_fn(m, b):
        loss = F.binary_cross_entropy_with_logits(m(b["image"]).float(), b["labels"])
        return loss, {"bce": float(loss.detach())}

    def batch(k):
        return {"image": torch.randn(k, 3, s, s, device=device), "labels": _labels(k, 14, device)}

    return Workload(model, opt, loss_fn, batch, lambda m, b: m(b["image"]), n, n, f"{s}", phase="timm resnet50")


# ---------------------------------------------------------------------------------------------- measuring
def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _apply_determinism(loop: Loop) -> None:
    """As the engine does it (shared.engine.seed_everything), and switched back off for configs that do not."""
    import torch
    from shared.engine import seed_everything
    seed_everything(loop.seed, loop.deterministic)
    if not loop.deterministic:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def _autocast(device, amp: str, enabled: bool = True):
    import torch
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None or not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_train_step(w: Workload, loop: Loop, device, batch):
    """One optimizer step exactly as shared.engine.Trainer makes it (see its _train_epoch / _optimizer_step)."""
    import torch
    from shared.engine import ModelEMA
    scaler = torch.amp.GradScaler("cuda") if loop.amp == "fp16" else None
    ema = ModelEMA(w.model, loop.ema_decay) if loop.ema_decay > 0 else None
    params = [p for g in w.optimizer.param_groups for p in g["params"]]

    def step():
        for _ in range(loop.grad_accum):
            with _autocast(device, loop.amp):
                loss, _logs = w.loss_fn(w.model, batch)
            float(loss.detach().float().item())          # the engine's non-finite check syncs once per micro-batch
            scaled = loss / loop.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if scaler is not None:
            if loop.clip_grad_norm > 0:
                scaler.unscale_(w.optimizer)
                torch.nn.utils.clip_grad_norm_(params, loop.clip_grad_norm)
            scaler.step(w.optimizer)
            scaler.update()
        else:
            if loop.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, loop.clip_grad_norm)
            w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(w.model)
    return step, ema


def _timed(fn: Callable, warmup: int, steps: int, device) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / max(steps, 1)


def _peaks(device) -> tuple[float | None, float | None]:
    import torch
    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB


def _reset_peaks(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _is_oom(err: BaseException) -> bool:
    import torch
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def measure(w: Workload, loop: Loop, row: Row, device, warmup: int, steps: int) -> None:
    """Fill ``row`` with the train-step and eval-forward numbers of ``w`` (an OOM is recorded, not raised)."""
    import torch
    row.params_m = sum(p.numel() for p in w.model.parameters()) / 1e6
    row.trainable_m = sum(p.numel() for g in w.optimizer.param_groups for p in g["params"]) / 1e6
    row.batch = f"{w.batch_size}" + (f" x {loop.grad_accum}" if loop.grad_accum > 1 else "") + \
        f" / eval {w.eval_batch_size}"
    row.size = w.size
    row.amp = loop.amp + ("" if w.eval_amp or loop.amp == "none" else " (eval fp32)")
    _reset_peaks(device)
    try:
        w.model.train()
        batch = w.make_batch(w.batch_size)
        step, ema = make_train_step(w, loop, device, batch)
        sec = _timed(step, warmup, steps, device)
        row.train_ips = w.batch_size * loop.grad_accum / sec
        row.train_peak_alloc_gib, row.train_peak_reserved_gib = _peaks(device)
        del batch
    except Exception as err:  # noqa: BLE001 - an OOM is a result; anything else is reported in the row
        if not _is_oom(err):
            raise
        row.error = "train: out of memory"
        row.train_peak_alloc_gib, row.train_peak_reserved_gib = _peaks(device)
        ema = None
    w.optimizer.zero_grad(set_to_none=True)
    _free(device)
    _reset_peaks(device)
    try:
        w.model.eval()
        make_eval = w.make_eval_batch or w.make_batch
        eval_batch = make_eval(w.eval_batch_size)

        def forward():
            with torch.no_grad(), _autocast(device, loop.amp, w.eval_amp):
                w.eval_fn(w.model, eval_batch)
        sec = _timed(forward, warmup, steps, device)
        row.eval_ips = w.eval_batch_size / sec
        row.eval_peak_alloc_gib, row.eval_peak_reserved_gib = _peaks(device)
        del eval_batch
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        row.error = (row.error + "; " if row.error else "") + "eval: out of memory"
        row.eval_peak_alloc_gib, row.eval_peak_reserved_gib = _peaks(device)
    del ema
    w.model.train()


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        import torch
        torch.cuda.empty_cache()


def fits(row: Row, limit_gib: float) -> str:
    if "out of memory" in row.error:
        return "no (OOM)"
    peak = row.peak_reserved
    if peak is None:
        return "n/a (cpu)"
    if peak > limit_gib:
        return "no"
    return "yes (tight)" if peak > limit_gib - 1.0 else "yes"


# ---------------------------------------------------------------------------------------------- the table
def _fmt(v, spec=".2f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def render(rows: list[Row], baselines: dict, limit_gib: float, device_name: str, smoke: bool) -> str:
    head = ["method", "config", "phase", "batch", "image size", "amp", "params M (trainable)",
            "peak alloc GiB", "peak reserved GiB", "train img/s", "train vs base", "eval img/s", "eval vs base",
            f"fits {limit_gib:g} GiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, b in baselines.items():
        lines.append("| " + " | ".join([
            "baseline", "-", b.phase, b.batch, b.size, b.amp, f"{b.params_m:.1f}", _fmt(b.peak_alloc),
            _fmt(b.peak_reserved), _fmt(b.train_ips, ".1f"), "1.00x", _fmt(b.eval_ips, ".1f"), "1.00x",
            "-"]) + " |")
    for r in rows:
        if r.error and r.train_ips is None and "out of memory" not in r.error:
            lines.append(f"| {r.method} | {', '.join(r.configs)} | {r.phase} | | | | | | | | | | | "
                         f"error: {r.error} |")
            continue
        lines.append("| " + " | ".join([
            r.method, ", ".join(r.configs), r.phase, r.batch, r.size, r.amp,
            f"{r.params_m:.1f} ({r.trainable_m:.1f})", _fmt(r.peak_alloc), _fmt(r.peak_reserved),
            _fmt(r.train_ips, ".1f"), _fmt(r.train_ratio, ".2f") + ("x" if r.train_ratio else ""),
            _fmt(r.eval_ips, ".1f"), _fmt(r.eval_ratio, ".2f") + ("x" if r.eval_ratio else ""),
            r.fits + (f" ({r.error})" if r.error and "OOM" not in r.fits else "")]) + " |")
    note = [f"\nDevice: {device_name}. Peaks are over the training step and the evaluation forward (validation runs "
            "in the training process with the optimizer state resident); the CUDA context (~0.3-0.6 GiB) is not "
            "in them. img/s counts samples: a CXR-CLIP sample is 2 images + 2 texts, a CheXtriev sample one CXR "
            "(18 anatomy crops). Ratios are against the baseline row with the same AMP, measured in this run. "
            "'yes (tight)': within 1 GiB of the limit."]
    if smoke:
        note.append("SMOKE RUN (tiny batch and image sizes, 1 step, no AMP): these numbers are NOT measurements.")
    return "\n".join(lines + note) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- main
def plan(methods: list[str], configs: list[str] | None) -> list[tuple[str, list[str], object]]:
    """[(method, config names sharing one signature, config of the first)] in method order."""
    groups: list[tuple[str, list[str], object]] = []
    known = []
    for method in methods:
        seen: dict[str, int] = {}
        for path in reproduce_configs(method):
            known.append(path.stem)
            if configs and path.stem not in configs:
                continue
            cfg = load(method, path)
            sig = signature(method, cfg)
            if sig in seen:
                groups[seen[sig]][1].append(path.stem)
            else:
                seen[sig] = len(groups)
                groups.append((method, [path.stem], cfg))
    unknown = sorted(set(configs or []) - set(known))
    if unknown:
        raise SystemExit(f"train_step: unknown config(s) {unknown} for methods {methods}; known: {sorted(known)}")
    return groups


def parse_args(argv, strict: bool):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--configs", nargs="*", default=None, help="config names (file stems), e.g. nih_convnext v6")
    p.add_argument("--cap-gib", type=float, default=None,
                   help="limit this process's CUDA memory to this many GiB (set_per_process_memory_fraction)")
    p.add_argument("--fit-gib", type=float, default=24.0, help="the 'fits' column's limit (default 24, or --cap-gib)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps / eval forwards per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 1 step: proves the script runs (default on CPU)")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--json", default=None, help="also write every number as JSON here")
    if strict:
        return p.parse_args(argv)
    args, rest = p.parse_known_args(argv)
    if rest:   # `python -m benchmarks -- ARGS` hands the same arguments to every benchmark
        print(f"train_step: ignoring arguments meant for other benchmarks: {rest}", file=sys.stderr)
    return args


def main(argv=None, strict: bool = False) -> dict:
    a = parse_args(argv, strict)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train_step: --device cuda but torch sees no CUDA device")
    if device.type == "cuda" and device.index is None:   # the memory-fraction / stats calls need an index
        device = torch.device("cuda", torch.cuda.current_device())
    smoke = a.smoke or device.type != "cuda"
    if smoke and not a.smoke:
        print("train_step: no CUDA device, running --smoke (tiny shapes; the numbers are not measurements)")
    warmup, steps = (1, 1) if smoke else (a.warmup, a.steps)
    limit = a.cap_gib if a.cap_gib is not None else a.fit_gib
    device_name = "cpu"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        device_name = f"{props.name}, {props.total_memory / GIB:.1f} GiB, torch {torch.__version__}"
        if a.cap_gib is not None:
            fraction = min(1.0, a.cap_gib * GIB / props.total_memory)
            torch.cuda.set_per_process_memory_fraction(fraction, device)
            device_name += f", capped at {a.cap_gib:g} GiB (fraction {fraction:.3f})"

    rows: list[Row] = []
    baselines: dict[tuple, Row] = {}

    def baseline_for(loop: Loop) -> Row:
        key = ("none" if smoke else loop.amp, loop.deterministic)
        if key not in baselines:
            b_loop = Loop(amp=key[0], deterministic=key[1])
            _apply_determinism(b_loop)
            b = Row("baseline", [])
            w = baseline_workload(device, smoke)
            measure(w, b_loop, b, device, warmup, steps)
            del w
            _free(device)
            baselines[key] = b
            print(f"baseline {key}: train {_fmt(b.train_ips, '.1f')} img/s, eval {_fmt(b.eval_ips, '.1f')} img/s",
                  flush=True)
        return baselines[key]

    for method, names, cfg in plan(a.methods, a.configs):
        loop = Loop.of(cfg.engine)
        if smoke:
            loop = dataclasses.replace(loop, amp="none", grad_accum=min(loop.grad_accum, SMOKE["accum"]))
        base = baseline_for(loop)
        _apply_determinism(loop)
        t0 = time.perf_counter()
        try:
            for w in BUILDERS[method](cfg, device, smoke):
                row = Row(method, names, phase=w.phase)
                measure(w, loop, row, device, warmup, steps)
                row.fits = fits(row, limit)
                row.train_ratio = row.train_ips / base.train_ips if row.train_ips and base.train_ips else None
                row.eval_ratio = row.eval_ips / base.eval_ips if row.eval_ips and base.eval_ips else None
                rows.append(row)
                print(f"{method} {','.join(names)} {w.phase}: train {_fmt(row.train_ips, '.1f')} img/s, eval "
                      f"{_fmt(row.eval_ips, '.1f')} img/s, peak {_fmt(row.peak_alloc)} / {_fmt(row.peak_reserved)} "
                      f"GiB {row.error}", flush=True)
                del w
        except Exception as err:  # noqa: BLE001 - one method's broken builder does not hide the others
            traceback.print_exc(file=sys.stderr)
            rows.append(Row(method, names, error=f"{type(err).__name__}: {err}"))
        _free(device)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        if a.json:   # after every config, so a run stopped at a time limit keeps what it measured
            _write_atomic(Path(a.json), _as_json(device_name, smoke, limit, baselines, rows))

    table = render(rows, baselines, limit, device_name, smoke)
    print(table)
    if a.out:
        _write_atomic(Path(a.out), table)
    return json.loads(_as_json(device_name, smoke, limit, baselines, rows))


def _as_json(device_name: str, smoke: bool, limit: float, baselines: dict, rows: list[Row]) -> str:
    result = {"device": device_name, "smoke": smoke, "limit_gib": limit,
              "baselines": [dataclasses.asdict(b) for b in baselines.values()],
              "rows": [dataclasses.asdict(r) for r in rows]}
    return json.dumps(result, indent=1, default=str) + "\n"


if __name__ == "__main__":
    out = main(strict=True)
    sys.exit(1 if any(r["error"] and "out of memory" not in r["error"] for r in out["rows"]) else 0)
