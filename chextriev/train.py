"""Train a CheXtriev model (any of V0-V6, the ResNet50 baseline, ATH, AnaXNet).

    python -m chextriev.train -cfg chextriev/configs/v6.yaml [--set data.prepared=DIR engine.epochs=2] [--resume RUN]
    cd chextriev && python train.py -cfg configs/v6.yaml

Recipe (spec sections 3 and 7): Adam, ReduceLROnPlateau on the validation loss once per epoch (StepLR for
AnaXNet), gradient clipping 0.5, validation twice per epoch (``val_per_epoch``), early stopping (patience 4
validations) and checkpoint selection on the validation mean AUROC (``engine.monitor``), gradient accumulation to
the original effective batch. The prepared data must carry the label policy the run asks for (``open_prepared``). The AUROC's image scores come from a head the loss trains
(``chextriev.losses.image_scores``: the graph head, or for node-only supervision (V0-node, graph_importance 0)
the max over the anatomies' node logits). Writes runs/chextriev/<name>/<timestamp>/ (see shared.engine), then,
unless ``--no-test``, evaluates it as ``python -m chextriev.test --run RUN_DIR`` does (the run holds its config)
and writes ``python -m shared.report RUN_DIR``'s report.md.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # `cd chextriev && python train.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch

from shared.cli import add_no_test_flag, cli_exit, test_after_training
from shared.config import parse_config
from shared.engine import Trainer, all_gather_concat, barrier, create_run_dir, is_main_process, seed_everything
from shared.metrics.classification import per_class_auroc

from chextriev.config import ChextrievConfig
from chextriev.data import AnatomyDataset, CachedDataset, build_feature_cache, cache_key, original_sizes
from chextriev.losses import compute_loss, image_scores
from chextriev.models import ANATOMY_MODELS, build_model
from chextriev.prepare import Prepared

METHOD = "chextriev"


# ----------------------------------------------------------------------------------------------- helpers
def input_mode(cfg: ChextrievConfig) -> tuple[str, int]:
    if cfg.model.name in ANATOMY_MODELS:
        return "crops", cfg.data.crop_size
    if cfg.model.name == "ath":
        return "image", cfg.model.ath_input_size
    return "image", cfg.data.image_size


def uses_cache(cfg: ChextrievConfig) -> bool:
    """Whether the frozen CNN's outputs come from the feature cache: not for ATH (no frozen CNN) and not with
    ``model.bn_drift`` (the original's drifting BatchNorm changes the CNN's output every step, so the CNN runs
    live on every crop; this is why the faithful protocol is ~30x slower)."""
    return cfg.data.feature_cache and cfg.model.name != "ath" and not cfg.model.bn_drift


def open_prepared(cfg: ChextrievConfig) -> Prepared:
    """The prepared data of ``cfg``; refuses data whose label policy is not the one the run asks for (a faithful
    run on yes-wins labels, or a fixed one on last-wins labels, would compare other query sets). Its images are
    checked per ``data.verify_images`` / ``data.on_bad_image`` (``Prepared.check_images``)."""
    prepared = Prepared(cfg.data.prepared)
    made_with = prepared.meta.get("label_policy")
    if made_with != cfg.data.label_policy:
        raise ValueError(f"{prepared.dir / 'meta.json'}: prepared with label_policy={made_with} but the run asks for "
                         f"data.label_policy={cfg.data.label_policy}; point data.prepared at data prepared with "
                         f"python -m chextriev.prepare --label-policy {cfg.data.label_policy} ...")
    return prepared.check_images(cfg.data.verify_images, cfg.data.on_bad_image)


def validation_interval(cfg: ChextrievConfig, steps_per_epoch: int) -> int:
    """Optimizer steps between validations: ``val_per_epoch`` times per epoch (exactly at the middle and the end
    when the epoch has an even number of steps), or ``engine.val_every_iters`` when ``val_per_epoch`` is 0."""
    if cfg.val_per_epoch <= 0:
        return cfg.engine.val_every_iters
    return max(1, math.ceil(steps_per_epoch / cfg.val_per_epoch))


def frozen_cnn(model: torch.nn.Module) -> torch.nn.Module:
    """The frozen CNN inside any of the models (GlobalCNN.cnn, encoder.cnn)."""
    if hasattr(model, "encoder"):
        return model.encoder.cnn
    return model.cnn


def make_datasets(cfg: ChextrievConfig, prepared: Prepared, model: torch.nn.Module, splits: Sequence[str],
                  device: str | torch.device = "cpu") -> dict:
    """{split: Dataset}; with the feature cache on, builds it once (all prepared images) and serves features."""
    mode, size = input_mode(cfg)
    sets = {s: AnatomyDataset(prepared.frame, prepared.boxes, prepared.labels, prepared.split(s), mode, size)
            for s in splits}
    if "train" in sets and cfg.data.limit_train > 0:
        sets["train"].rows = sets["train"].rows[: cfg.data.limit_train]
    if not uses_cache(cfg):
        return sets
    everything = AnatomyDataset(prepared.frame, prepared.boxes, prepared.labels, np.arange(len(prepared.frame)),
                                mode, size)
    ids = prepared.frame["image_id"].tolist()
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else prepared.dir / "feature_cache"
    cnn = frozen_cnn(model)
    key = cache_key(cfg.model.backbone, cnn, mode, size, ids, boxes=prepared.boxes, dtype=cfg.data.cache_dtype,
                    sizes=original_sizes(prepared.frame))

    def build():
        return build_feature_cache(cnn, everything, root / key, cfg.data.cache_batch_size, device=device,
                                   meta={"backbone": cfg.model.backbone, "pretrained_path": cfg.model.pretrained_path},
                                   dtype=cfg.data.cache_dtype)
    if is_main_process():   # under torchrun one process writes the cache, the others open it once it exists
        build()
    barrier()
    cache = build()
    return {s: CachedDataset(d, cache) for s, d in sets.items()}


def load_adjacency(cfg: ChextrievConfig, prepared: Prepared) -> Optional[torch.Tensor]:
    return torch.as_tensor(prepared.adjacency) if cfg.model.adjacency == "cooccurrence" else None


class ValLossPlateau:
    """ReduceLROnPlateau stepped once per epoch, as the original's Lightning scheduler, with the latest validation
    LOSS although the engine's monitor (best checkpoint, early stop) is the validation AUROC: the engine calls
    ``step()`` at each epoch end; this uses the loss that ``evaluate`` stored in ``last``."""

    def __init__(self, optimizer, factor: float, patience: int):
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor,
                                                                patience=patience)
        self.last: dict = {}

    def step(self, _monitor_value=None) -> None:
        if "val/loss" in self.last:
            self.sched.step(self.last["val/loss"])

    def state_dict(self) -> dict:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sched.load_state_dict(state)


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device) -> dict:
    """Concatenate logits, embeddings and labels over ``loader`` (model in eval mode)."""
    outs = {"logits": [], "embedding": [], "labels": [], "node_labels": [], "node_logits": []}
    for batch in loader:
        out = model(batch["x"].to(device))
        outs["logits"].append(out["logits"].float().cpu())
        outs["embedding"].append(out["embedding"].float().cpu())
        outs["labels"].append(batch["labels"])
        outs["node_labels"].append(batch["node_labels"])
        if "node_logits" in out:
            outs["node_logits"].append(out["node_logits"].float().cpu())
    return {k: torch.cat(v) for k, v in outs.items() if v}


def make_optimizer(cfg: ChextrievConfig, model: torch.nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.scheduler == "plateau":
        return opt, ValLossPlateau(opt, cfg.optim.plateau_factor, cfg.optim.plateau_patience), "epoch"
    if cfg.optim.scheduler == "step":
        return opt, torch.optim.lr_scheduler.StepLR(opt, cfg.optim.step_size, cfg.optim.step_gamma), "epoch"
    return opt, None, "iter"


# -------------------------------------------------------------------------------------------------- train
def train(cfg: ChextrievConfig, resume: Optional[str] = None) -> Path:
    """Train per ``cfg``; returns the run directory (checkpoints/best.pt = best validation mean AUROC)."""
    prepared = open_prepared(cfg)
    seed_everything(cfg.engine.seed, cfg.engine.deterministic)
    model = build_model(cfg.model, load_adjacency(cfg, prepared))
    run_dir = create_run_dir(METHOD, cfg.name, root=cfg.runs_root, resume=resume)
    optimizer, scheduler, interval = make_optimizer(cfg, model)

    def loss_fn(m, batch):
        out = m(batch["x"])
        return compute_loss(cfg.model.name, out, batch, cfg.loss.graph_importance, cfg.loss.triplet_weight)

    trainer = Trainer(model, optimizer, cfg.engine, run_dir, loss_fn=loss_fn, scheduler=scheduler,
                      scheduler_interval=interval, config=cfg)
    sets = make_datasets(cfg, prepared, model, ("train", "val"), device=trainer.device)
    val_loader = trainer.make_loader(sets["val"], cfg.data.eval_batch_size, shuffle=False, train=False)

    def evaluate(m):
        shard = predict(m, val_loader, trainer.device)     # this rank's shard under torchrun: gather them all
        pred = {k: all_gather_concat(v) for k, v in shard.items()}
        out = {"logits": pred["logits"], "node_logits": pred.get("node_logits"), "hash": pred["embedding"]}
        batch = {"labels": pred["labels"], "node_labels": pred["node_labels"]}
        loss, _ = compute_loss(cfg.model.name, out, batch, cfg.loss.graph_importance, cfg.loss.triplet_weight)
        scores = image_scores(out, cfg.loss.graph_importance)      # a head the loss trains (V0-node: nodes)
        auroc = per_class_auroc(pred["labels"].numpy(), torch.sigmoid(scores).numpy())
        metrics = {"val/loss": float(loss), "val/auroc_mean": float(np.nanmean(auroc))
                   if np.isfinite(auroc).any() else float("nan")}
        if isinstance(scheduler, ValLossPlateau):
            scheduler.last = metrics
        return metrics

    trainer.evaluate = evaluate
    train_loader = trainer.make_loader(sets["train"], cfg.data.batch_size, shuffle=True, drop_last=False)
    trainer.cfg.val_every_iters = validation_interval(cfg, trainer.steps_per_epoch(train_loader))
    best = trainer.fit(train_loader)
    if is_main_process():
        print(f"best validation: {({k: round(v, 4) for k, v in best.items()})} -> {run_dir}")
    return run_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Train a CheXtriev model")
    parser.add_argument("--resume", default=None, help="run directory to resume")
    add_no_test_flag(parser)
    cfg, args = parse_config(ChextrievConfig, argv, parser=parser, example="optim.lr=1e-4 engine.epochs=2")
    run_dir = train(cfg, args.resume)   # user errors become one `prog: error:` line in cli_exit
    print(f"run directory: {run_dir}", flush=True)
    from chextriev.test import main as test_main   # imported here: chextriev.test imports this module
    test_after_training(METHOD, run_dir, args.no_test, test_main)
    return 0


if __name__ == "__main__":
    cli_exit("python -m chextriev.train", main)
