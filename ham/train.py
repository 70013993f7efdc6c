"""Train HAM.

    python -m ham.train -cfg ham/configs/nih_cls_fold1.yaml --set data.root=/data/nih
    cd ham && python train.py -cfg configs/demo.yaml

Writes ``runs/ham/<config>/<timestamp>/`` (or ``--run-dir``; an existing run directory resumes from its
checkpoints/last.pt; ``--resume RUN`` continues a run and refuses a directory that does not exist):
config.yaml, log.txt, metrics.jsonl, checkpoints/{last,best}.pt; then, unless ``--no-test``, ``python -m ham.test
--run RUN`` and ``python -m shared.report RUN`` (results.json, test_*.csv, roc.png, report.md). The attention page
stays its own command: ``python -m ham.visual --run RUN``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd ham && python train.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

from contextlib import nullcontext

import torch

from shared.cli import add_no_test_flag, cli_exit, test_after_training
from shared.config import parse_config, to_dict
from shared.data import DataError
from shared.engine import (Trainer, create_run_dir, is_main_process, load_checkpoint, save_checkpoint, seed_everything,
                           step_schedule)

from ham.config import HAMConfig, build_model
from ham.data import HAMDataset, box_args, build_splits, crf_table_for, load_index, select
from ham.evaluation import localize, predict, summary_metrics
from ham.losses import BatchCounts, ham_losses
from ham.model import refine_cams


def prepare_data(cfg: HAMConfig):
    """(classes, boxes, splits) for the config; raises one clear error when data is missing."""
    frame, boxes, classes = load_index(cfg.data)
    splits = build_splits(cfg.data, frame, boxes)
    return classes, boxes, splits


def eval_sets(cfg: HAMConfig, frame, box_ids, classes, boxes):
    """(classification dataset, localisation dataset or None) of an evaluation frame."""
    d = cfg.data
    cls_set = HAMDataset(frame, classes, boxes, set(), train=False, img_size=d.img_size, with_masks=False)
    loc_ids = [i for i in frame["image_id"] if i in box_ids and i in boxes]
    loc_set = None
    if loc_ids:
        loc_set = HAMDataset(select(frame, loc_ids), classes, boxes, set(loc_ids), train=False,
                             img_size=d.img_size, with_masks=True, **box_args(d))
    return cls_set, loc_set


def micro_chunks(flag: torch.Tensor, micro_batch: int) -> list[torch.Tensor]:
    """Row indices of the micro-batches of one batch: the flagged (box-supervised) rows first, all in the first
    chunk (which then exceeds ``micro_batch`` only if the batch holds more flagged images than that), then the
    others in batch order, ``micro_batch`` rows per chunk. ``micro_batch <= 0`` or >= the batch: one chunk."""
    b = int(flag.shape[0])
    if micro_batch <= 0 or micro_batch >= b:
        return [torch.arange(b, device=flag.device)]
    order = torch.argsort((flag <= 0).to(torch.int8), stable=True)     # flagged rows first, stable otherwise
    first = max(micro_batch, int((flag > 0).sum()))
    return [order[:first]] + list(order[first:].split(micro_batch))


# The original keeps three best checkpoints side by side; the engine's best.pt is the one by engine.monitor
# (val/auroc_mean in every config: the original's best_auc), these two are the localisation ones.
LOC_CHECKPOINTS = {"tiou": "val/tiou_mean", "tiobb": "val/tiobb_mean"}


class BestByMetric:
    """checkpoints/best_<name>.pt: the weights at the highest value of one validation metric so far. The value is
    read back from the file, so a resumed run keeps comparing against it."""

    def __init__(self, ckpt_dir: Path, name: str, metric: str):
        self.path, self.metric = Path(ckpt_dir) / f"best_{name}.pt", metric
        self.value = load_checkpoint(self.path).get("best_metric") if self.path.exists() else None

    def update(self, metrics: dict, model: torch.nn.Module, step: int) -> None:
        value = metrics.get(self.metric)
        if value is None or value != value or (self.value is not None and value <= self.value):
            return
        self.value = float(value)
        if is_main_process():
            save_checkpoint({"format": 1, "model": model.state_dict(), "best_metric": self.value,
                             "monitor": self.metric, "global_step": step, "metrics": dict(metrics)}, self.path)


LOSS_KEYS = ("image", "labels", "masks", "flag", "bbox_tag")


def make_loss_fn(cfg: HAMConfig):
    """The training loss of one batch (= one optimizer step with ``engine.grad_accum: 1``).

    With ``optim.micro_batch`` smaller than the batch, the batch is processed in micro-batches (forward and
    backward of one at a time, so activations of only ``micro_batch`` images are alive; BatchNorm normalises over
    each micro-batch, as each of the original's two DataParallel replicas did over 12 images). Every loss term of
    a micro-batch is normalised by the counts of the WHOLE batch (``BatchCounts``) and all flagged images go into
    the same micro-batch, so the summed loss and the accumulated gradients equal those of the whole batch in one
    pass (up to float error and BatchNorm's per-micro-batch statistics). The backward of all but the last
    micro-batch runs here; the returned tensor carries the last micro-batch's graph plus the earlier ones' values,
    so the Trainer's backward completes the step and its log shows the full-batch loss."""
    m = cfg.model
    micro = int(getattr(cfg.optim, "micro_batch", 0) or 0)

    def chunk_loss(model, batch, counts):
        x = batch["image"]
        has_flag = bool((batch["flag"] > 0).any())
        out = model(x, refine=False)
        size = (x.shape[-2], x.shape[-1])
        refine = lambda raw: refine_cams(raw, size, m.cam_w, m.cam_sigma)  # noqa: E731
        return ham_losses(out, batch["labels"], batch["masks"] if has_flag else None, batch["flag"],
                          batch["bbox_tag"], cfg.loss, union="train", refine=refine, counts=counts)

    def loss_fn(model, batch):
        chunks = micro_chunks(batch["flag"], micro)
        if len(chunks) == 1:
            total, parts = chunk_loss(model, batch, None)
            return total, {k: float(v.detach()) for k, v in parts.items() if k != "total"}
        counts = BatchCounts.of(batch["labels"], batch["flag"], batch["bbox_tag"])
        done, logs = 0.0, {}
        for k, idx in enumerate(chunks):
            sub = {key: batch[key][idx] for key in LOSS_KEYS}
            total, parts = chunk_loss(model, sub, counts)
            for name, v in parts.items():
                if name != "total":
                    logs[name] = logs.get(name, 0.0) + float(v.detach())
            if k == len(chunks) - 1:
                return total + done, logs
            sync = model.no_sync() if hasattr(model, "no_sync") else nullcontext()
            with sync:
                total.backward()
            done += float(total.detach())
        raise AssertionError("unreachable")

    return loss_fn


def check_micro_batching(cfg: HAMConfig) -> None:
    """Micro-batching runs the backward of all but the last micro-batch inside the loss function: fp16's
    GradScaler cannot scale those, and engine-level accumulation on top would normalise per batch again."""
    micro = cfg.optim.micro_batch
    if micro < 0:
        raise ValueError(f"optim.micro_batch must be >= 0 (0: the whole batch at once), got {micro}")
    if 0 < micro < cfg.optim.batch_size and cfg.engine.amp == "fp16":
        raise ValueError("optim.micro_batch < optim.batch_size does not support engine.amp=fp16 (the loss scaler "
                         "cannot reach the in-loss backward passes); use amp=bf16 or none")


def visdom_grid(trainer: Trainer, batch, out, max_images: int = 4) -> None:
    """Input / GT mask / disease attention / positive attention grid on visdom (only when a server is up)."""
    vis = getattr(trainer.logger, "vis", None)
    if vis is None:
        return
    try:
        k = min(max_images, batch["image"].shape[0])
        img = (batch["image"][:k, :1] * 0.5 + 0.5).clamp(0, 1)
        gt = batch["masks"][:k].amax(1, keepdim=True).float()
        dis = (out.refined_cls[:k].float().cpu() * batch["has_box"][:k, :, None, None]).amax(1, keepdim=True)
        ano = out.refined_ano[:k].float().cpu()
        grid = torch.cat([img, gt, dis, ano], 0).repeat(1, 3, 1, 1)
        vis.images(grid.numpy(), nrow=k, win="ham_attention",
                   opts={"title": "input / GT mask / disease attention / positive attention"})
    except Exception as err:  # noqa: BLE001 - a plotting sink never stops training
        trainer.logger.vis = None
        trainer.logger.warn(f"visdom: image grid disabled ({type(err).__name__}: {err})")


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description="Train HAM (Ouyang et al., TMI 2021)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--resume", default=None, help="run directory to continue (must exist), or 'latest'")
    where.add_argument("--run-dir", default=None,
                       help="run directory to write (created; resumes when it has checkpoints/last.pt)")
    add_no_test_flag(parser)
    cfg, args = parse_config(HAMConfig, argv, parser=parser, example="optim.lr=1e-4 engine.epochs=2")
    run_dir = train(cfg, Path(args.config).stem, args.run_dir, args.resume)
    from ham.test import main as test_main   # imported here: ham.test imports this module
    test_after_training("ham", run_dir, args.no_test, test_main,
                        more=[f"attention page: python -m ham.visual --run {run_dir}"])
    return run_dir


def train(cfg: HAMConfig, config_name: str, run_dir: str | None = None, resume: str | None = None) -> Path:
    """Train ``cfg`` into ``run_dir`` (created; resumed when it holds a run) or a new runs/ham/<config_name>/<ts>
    (``resume``: that run, or 'latest'); returns the run directory. The run's config.yaml records ``config_name``
    as ``name``: reports name the setting, not the folder (``--run-dir demo_out/ham`` is the config ``demo``)."""
    cfg = dataclasses.replace(cfg, name=config_name)
    check_micro_batching(cfg)
    classes, boxes, splits = prepare_data(cfg)
    if cfg.engine.grad_accum > 1:
        splits.notes.append(f"engine.grad_accum={cfg.engine.grad_accum}: each batch of {cfg.optim.batch_size} is "
                            "normalised on its own and the batches' losses are averaged, which is not the loss of "
                            "one larger batch (use optim.batch_size with optim.micro_batch instead)")
    seed_everything(cfg.engine.seed, cfg.engine.deterministic)
    model = build_model(cfg.model, len(classes))
    if run_dir:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = create_run_dir("ham", config_name, root=cfg.runs_root, resume=resume)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = step_schedule(optimizer, cfg.optim.step_epochs, cfg.optim.gamma)
    d = cfg.data
    train_set = HAMDataset(splits.train, classes, boxes, splits.train_box_ids, train=True, img_size=d.img_size,
                           scale_max_pct=d.scale_max_pct, with_masks=bool(splits.train_box_ids),
                           crf=crf_table_for(d, boxes), **box_args(d))
    splits.notes.extend(train_set.notes)
    val_sets = eval_sets(cfg, splits.val, splits.val_box_ids, classes, boxes) if splits.val is not None else None
    if val_sets is not None and len(val_sets[0]) == 0:   # found now, not after a training epoch
        raise DataError(f"the validation split has no images (data.val={d.val!r}, data.test={d.test!r} under "
                        f"{d.root}): check the split lists, or set data.honest_validation=true")
    holder: dict = {}

    def evaluate(model):
        trainer = holder["trainer"]
        dev = trainer.device
        cls_set, loc_set = val_sets
        # HAM's predict/localize gather per-rank results that may be empty (a box split smaller than the world)
        pred = predict(model, trainer.make_loader(cls_set, cfg.optim.eval_batch_size, shuffle=False, train=False,
                                                  allow_empty_shards=True),
                       dev, trainer.autocast, cfg.loss, desc="val")
        meter = None
        if loc_set is not None and cfg.eval.localization_in_val:
            first = {"done": False}

            def on_batch(batch, out):
                if not first["done"]:
                    visdom_grid(trainer, batch, out)
                    first["done"] = True

            meter = localize(model, trainer.make_loader(loc_set, cfg.optim.eval_batch_size, shuffle=False,
                                                        train=False, allow_empty_shards=True),
                             dev, classes, cfg.eval.loc_threshold, trainer.autocast, on_batch=on_batch,
                             desc="val-loc")
        metrics = summary_metrics(pred, meter, classes, prefix="val/")
        for keeper in holder["loc_best"]:
            keeper.update(metrics, model, trainer.global_step)
        return metrics

    trainer = Trainer(model, optimizer, cfg.engine, run_dir, loss_fn=make_loss_fn(cfg),
                      evaluate=evaluate if val_sets is not None else None, scheduler=scheduler,
                      scheduler_interval="epoch", config=to_dict(cfg))
    holder["trainer"] = trainer
    holder["loc_best"] = [BestByMetric(trainer.ckpt_dir, name, metric) for name, metric in LOC_CHECKPOINTS.items()]
    for note in splits.notes:
        trainer.log(f"note: {note}")
    trainer.log(f"data: {len(splits.train)} train images ({len(splits.train_box_ids)} box-supervised), "
                f"{0 if splits.val is None else len(splits.val)} val, {len(splits.test)} test "
                f"({len(splits.test_box_ids)} with boxes); {len(classes)} classes")
    loader = trainer.make_loader(train_set, cfg.optim.batch_size, shuffle=True)
    trainer.fit(loader)
    (run_dir / "notes.txt").write_text("\n".join(splits.notes) + "\n")
    print(f"run directory: {run_dir}")
    return run_dir


if __name__ == "__main__":
    cli_exit("python -m ham.train", main)
