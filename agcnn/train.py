"""Train AG-CNN: three stages (paper) or joint training (seed repository's variant).

    python -m agcnn.train -cfg agcnn/configs/nih_resnet50.yaml [--resume RUN_DIR | --run-dir DIR] [--set k=v ...]
    cd agcnn && python train.py -cfg configs/demo.yaml

Stage I trains the global branch from ImageNet; stage II the local branch on attention crops with the global
branch frozen; stage III the fusion FC with both branches frozen (frozen = no gradient, BatchNorm in eval mode).
Each stage is one ``shared.engine.Trainer`` in its own subdirectory of the run (``stage1_global``,
``stage2_local``, ``stage3_fusion``; ``joint`` for the joint variant) and keeps the checkpoint with the best
validation mean AUROC of its own head; the next stage starts from that checkpoint. ``--resume RUN_DIR`` walks the
stages again: a finished stage just reloads its best weights, the interrupted one continues from its
``checkpoints/last.pt`` (epoch, batch, optimizer, scheduler, RNG). ``--run-dir DIR`` writes into DIR (created if
needed) and resumes the same way when DIR already holds a run (what ``make reproduce-agcnn-nih`` relies on).
The resolved config goes to ``RUN/config.yaml`` (``agcnn.test --run RUN`` reads it). Then, unless ``--no-test``,
``python -m agcnn.test --run RUN`` and ``python -m shared.report RUN`` (results.json, overlays, report.md in RUN).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # `cd agcnn && python train.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch
import torch.nn.functional as F

from shared.cli import add_no_test_flag, cli_exit, test_after_training
from shared.config import ConfigError, parse_config, to_dict
from shared.data.labels import NIH_WANG_ORDER
from shared.engine import (EngineConfig, Trainer, all_gather_concat, create_run_dir, record_config, seed_everything,
                           step_schedule, unwrap_model)
from shared.metrics.classification import per_class_auroc

from agcnn.config import Config, StageConfig
from agcnn.model import AGCNN
from agcnn.weights import load_backbone, load_seed_fusion_fc

METHOD = "agcnn"


@dataclasses.dataclass
class Stage:
    dirname: str
    parts: tuple[str, ...]          # trainable parts
    weights: dict[str, float]       # loss weight per head
    monitor: str                    # head whose validation mean AUROC selects best.pt
    cfg: StageConfig


def stage_plan(cfg: Config) -> list[Stage]:
    t = cfg.train
    if t.mode == "joint":
        wg, wl, wf = t.joint_weights
        return [Stage("joint", ("global", "local", "fusion"), {"global": wg, "local": wl, "fusion": wf}, "fusion",
                      t.joint_stage)]
    return [Stage("stage1_global", ("global",), {"global": 1.0}, "global", t.global_stage),
            Stage("stage2_local", ("local",), {"local": 1.0}, "local", t.local_stage),
            Stage("stage3_fusion", ("fusion",), {"fusion": 1.0}, "fusion", t.fusion_stage)]


def timm_backbone(m) -> str:
    """The timm name to build: ``backbone.pretrained_tag`` when downloading ImageNet weights (``resnet50.tv_in1k``),
    the bare name otherwise (a tag already in ``backbone`` wins)."""
    if m.pretrained and not m.pretrained_path and m.pretrained_tag and "." not in m.backbone:
        return f"{m.backbone}.{m.pretrained_tag}"
    return m.backbone


def build_model(cfg: Config) -> AGCNN:
    m = cfg.model
    model = AGCNN(backbone=timm_backbone(m), num_classes=m.num_classes, pool=m.pool,
                  pretrained=m.pretrained and not m.pretrained_path, drop_rate=m.drop_rate,
                  backbone_kwargs=m.backbone_kwargs, tau=m.tau, heatmap_stat=m.heatmap_stat, threshold=m.threshold,
                  crop_size=m.crop_size, crop_method=m.crop_method, max_label_iters=m.max_label_iters,
                  crop_labeler=m.crop_labeler)
    if m.pretrained_path:
        for branch in (model.global_branch, model.local_branch):
            load_backbone(branch, m.pretrained_path)
    if m.seed_fusion_fc:
        load_seed_fusion_fc(model, m.seed_fusion_fc)
    return model


def heads_for(branches: Sequence[str]) -> tuple[str, ...]:
    return tuple(h for h in ("global", "local", "fusion") if h in branches)


def branches_for(stage: Stage) -> tuple[str, ...]:
    """What the forward pass has to compute for a stage (stage I needs neither crop nor local branch)."""
    return tuple(stage.weights)


def make_loss(stage: Stage):
    branches = branches_for(stage)

    def loss_fn(model, batch):
        out = model(batch["image"], branches=branches)
        y = batch["labels"]
        logs, total = {}, 0.0
        for head, w in stage.weights.items():
            loss = F.binary_cross_entropy_with_logits(out[head].float(), y)  # mean over classes and batch
            logs[f"bce_{head}"] = float(loss.detach())
            total = total + w * loss
        return total, logs
    return loss_fn


@torch.no_grad()
def predict(model: AGCNN, loader, device, branches: Sequence[str], autocast=None) -> dict[str, np.ndarray]:
    """Sigmoid outputs of ``branches`` plus labels, indices and crop fallbacks over ``loader`` (gathered)."""
    model = unwrap_model(model)
    keep = {h: [] for h in heads_for(branches)}
    ys, idx, fb = [], [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        with (autocast() if autocast else torch.autocast(device.type, enabled=False)):
            out = model(x, branches=tuple(branches))
        for h in keep:
            keep[h].append(torch.sigmoid(out[h].float()))
        ys.append(batch["labels"].to(device))
        idx.append(torch.as_tensor(batch["index"], device=device))
        if "fallback" in out:
            fb.append(out["fallback"].to(device))
    res = {h: all_gather_concat(torch.cat(v)).cpu().numpy() for h, v in keep.items() if v}
    res["labels"] = all_gather_concat(torch.cat(ys)).cpu().numpy()
    res["index"] = all_gather_concat(torch.cat(idx)).cpu().numpy()
    if fb:
        res["fallback"] = all_gather_concat(torch.cat(fb)).cpu().numpy()
    return res


def mean_auroc(labels: np.ndarray, scores: np.ndarray, n: int = len(NIH_WANG_ORDER)) -> float:
    """Unweighted mean AUROC over the 14 findings (No Finding, when predicted, is not in the paper's mean)."""
    auc = per_class_auroc(labels[:, :n], scores[:, :n])
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def make_evaluate(stage: Stage, loader, trainer_ref: list):
    branches = branches_for(stage)

    def evaluate(model):
        trainer = trainer_ref[0]
        res = predict(model, loader, trainer.device, branches, trainer.autocast)
        y = res["labels"]
        metrics = {}
        for h in heads_for(branches):
            metrics[f"val/auroc_{h}"] = mean_auroc(y, res[h])
        p = np.clip(res[stage.monitor], 1e-7, 1 - 1e-7)
        metrics["val/loss"] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        metrics["val/auroc_mean"] = metrics[f"val/auroc_{stage.monitor}"]
        if "fallback" in res:
            metrics["val/crop_fallback"] = float(res["fallback"].mean())
        return metrics
    return evaluate


def make_optimizer(cfg: Config, params, stage: StageConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=stage.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=stage.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig):
    """Per-epoch step decay: ``lr_step_epochs: [20]`` divides the lr once, after epoch 20 (the paper's "lr 0.01
    divided by 10 after 20 epochs", the configs' reading); an int ``20`` every 20 epochs (StepLR: at 20 and 40)."""
    return step_schedule(optimizer, stage.lr_step_epochs, stage.lr_gamma)


def run_stage(model: AGCNN, cfg: Config, sets: dict, run_dir: Path, stage: Stage) -> dict:
    """Train one stage in ``run_dir/<stage.dirname>`` (resuming there) and leave its best weights in ``model``."""
    stage_dir = run_dir / stage.dirname
    model.set_trainable(stage.parts)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params, stage.cfg)
    scheduler = make_scheduler(optimizer, stage.cfg)
    engine = dataclasses.replace(cfg.engine, epochs=stage.cfg.epochs, max_iters=stage.cfg.max_iters,
                                 monitor="val/auroc_mean", monitor_mode="max")
    ref: list = []
    trainer = Trainer(model, optimizer, engine, stage_dir, loss_fn=make_loss(stage), evaluate=None,
                      scheduler=scheduler, scheduler_interval="epoch", config=to_dict(cfg))
    ref.append(trainer)
    val_loader = trainer.make_loader(sets["val"], cfg.train.eval_batch_size, shuffle=False, train=False)
    trainer.evaluate = make_evaluate(stage, val_loader, ref)
    train_loader = trainer.make_loader(sets["train"], stage.cfg.batch_size, shuffle=True, drop_last=True)
    trainer.log(f"stage {stage.dirname}: training {stage.parts}, {sum(p.numel() for p in params):,} parameters, "
                f"batch {stage.cfg.batch_size}, lr {stage.cfg.lr}")
    best = trainer.fit(train_loader)
    trainer.best_model()
    model.set_trainable(stage.parts)  # best_model() put everything in eval mode
    summary = {"stage": stage.dirname, "best": best, "epoch": trainer.epoch, "global_step": trainer.global_step}
    (stage_dir / "stage.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def final_checkpoint(run_dir: Path, cfg: Config) -> Path:
    """The checkpoint test.py evaluates: best.pt of the last stage (all weights of the model)."""
    return Path(run_dir) / stage_plan(cfg)[-1].dirname / "checkpoints" / "best.pt"


def check_stage_epochs(cfg: Config, overrides: Sequence[str] = ()) -> None:
    """Each stage has its own ``epochs``/``max_iters`` (``train.global_stage.epochs`` ...); ``engine.epochs`` and
    ``engine.max_iters`` would be ignored, so setting them (in the YAML or with ``--set``) is a :class:`ConfigError`
    naming the keys to use instead."""
    default = EngineConfig()
    stages = ["joint_stage"] if cfg.train.mode == "joint" else ["global_stage", "local_stage", "fusion_stage"]
    for key in ("epochs", "max_iters"):
        given = any(item.split("=", 1)[0].strip() == f"engine.{key}" for item in overrides)
        if given or getattr(cfg.engine, key) != getattr(default, key):
            raise ConfigError(f"AG-CNN does not use engine.{key}: each stage has its own, set "
                              + " ".join(f"train.{stage}.{key}=N" for stage in stages))


def seeded_model(cfg: Config) -> AGCNN:
    """The seeded, freshly built model (ImageNet weights loaded): what :func:`train` starts from."""
    seed_everything(cfg.engine.seed, deterministic=cfg.engine.deterministic)
    return build_model(cfg)


def train(cfg: Config, run_dir: Path, sets: dict | None = None, model: AGCNN | None = None) -> AGCNN:
    """``model``: :func:`seeded_model`'s, built before the run directory (missing weights leave no empty run)."""
    from agcnn.data import datasets

    check_stage_epochs(cfg)
    run_dir = Path(run_dir)
    model = seeded_model(cfg) if model is None else model
    sets = datasets(cfg) if sets is None else sets
    record_config(run_dir, to_dict(cfg))   # a resume with --set keeps config.yaml, logs the changes beside it
    summaries = [run_stage(model, cfg, sets, run_dir, stage) for stage in stage_plan(cfg)]
    (run_dir / "stages.json").write_text(json.dumps(summaries, indent=2, default=float) + "\n")
    return model


def check_data_root(cfg: Config, parser: argparse.ArgumentParser) -> None:
    root = Path(cfg.data.root)
    if not root.is_dir():
        parser.error(f"data.root {root} does not exist: expected the NIH ChestX-ray14 layout "
                     "(Data_Entry_2017*.csv and images/*.png; see agcnn/README.md)")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--resume", default=None, help="run directory to resume (finished stages are reused)")
    where.add_argument("--run-dir", default=None, help="run directory to write (created; resumes when it holds a run)")
    add_no_test_flag(parser)
    cfg, args = parse_config(Config, argv, parser=parser, example="train.global_stage.epochs=2 "
                             "train.local_stage.epochs=2 train.fusion_stage.epochs=2 (each stage has its own epochs)")
    try:
        check_stage_epochs(cfg, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    check_data_root(cfg, parser)
    model = seeded_model(cfg)   # before the run directory: weights that cannot be had leave no empty run behind
    if args.run_dir:
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = create_run_dir(METHOD, cfg.name, root=cfg.runs, resume=args.resume, root_key="runs")
    print(f"run directory: {run_dir}", flush=True)
    train(cfg, run_dir, model=model)
    print(f"done; weights: {final_checkpoint(run_dir, cfg)}", flush=True)
    from agcnn.test import main as test_main   # imported here: agcnn.test imports this module
    test_after_training(METHOD, run_dir, args.no_test, test_main)
    return run_dir


if __name__ == "__main__":
    cli_exit("python -m agcnn.train", main)
