"""Train ADNet on one setting, then test its best checkpoint and write the report (``--no-test``: train only).

    python -m adnet.train -cfg adnet/configs/nih_convnext.yaml --set data.nih_root=/data/nih
    cd adnet && python train.py -cfg configs/demo.yaml --set data.nih_root=../data/synthetic/nih
    python -m adnet.train -cfg ... --resume runs/adnet/nih_convnext/20261121-2300    # continue a killed run

Recipe (spec section 2): AdamW (betas 0.9/0.999, eps 1e-6, wd 1e-4 on all parameters), cosine per iteration to
``optim.min_lr`` without warmup, BCEWithLogits (mean), fp16 AMP + GradScaler, EMA per iteration, seed 42, the
repeated-augmentation sampler for NIH. Checkpoints are selected on ``data.honest_validation ? val : test``
(``select/auroc_mean``, EMA weights when EMA is on; raw weights logged as raw/...). Then, unless ``--no-test``,
``python -m adnet.test --run RUN`` and ``python -m shared.report RUN`` (results.json, report.md in RUN).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd adnet && python train.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import torch
import torch.nn.functional as F

from shared.cli import add_no_test_flag, cli_exit, run_cli, test_after_training
from shared.config import parse_config, to_dict
from shared.data import DataError
from shared.engine import Trainer, all_gather_concat, cosine_schedule, create_run_dir, seed_everything

from adnet import test as adnet_test
from adnet.config import ADNetConfig
from adnet.data import build_frame, eval_transform, make_dataset, selection_split, train_transform
from adnet.evaluate import auroc_mean, build_from_config, min_size_check


def bce_loss(model, batch):
    logits = model(batch["image"])
    loss = F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float())
    return loss, {"bce": float(loss.detach())}


def make_evaluate(trainer: Trainer, dataset, batch_size: int):
    """evaluate(model) -> {"select/auroc_mean"} on the selection split (sharded under torchrun, gathered)."""
    loader = trainer.make_loader(dataset, batch_size, shuffle=False, train=False)

    def evaluate(model):
        probs, targets = [], []
        for batch in loader:
            x = batch["image"].to(trainer.device, non_blocking=True)
            with trainer.autocast():
                logits = model(x)
            probs.append(torch.sigmoid(logits.float()))
            targets.append(batch["labels"].to(trainer.device).float())
        p = all_gather_concat(torch.cat(probs)).cpu().numpy()
        t = all_gather_concat(torch.cat(targets)).cpu().numpy()
        return {"select/auroc_mean": auroc_mean(t, p)}
    return evaluate


def run(cfg: ADNetConfig, resume: str | None = None) -> Path:
    """Train (resuming when asked); returns the run directory (checkpoints/best.pt: the selected weights)."""
    frame, labels = build_frame(cfg.data)
    seed_everything(cfg.engine.seed)
    model, notes = build_from_config(cfg, len(labels))
    min_size_check(cfg, model)
    run_dir = create_run_dir("adnet", cfg.name, root=cfg.runs_root, resume=resume)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                  weight_decay=o.weight_decay)
    trainer = Trainer(model, optimizer, cfg.engine, run_dir, loss_fn=bce_loss, scheduler=None,
                      scheduler_interval="iter", config=to_dict(cfg))
    for note in notes:
        trainer.log(note)
    split = selection_split(cfg.data)
    trainer.log(f"{cfg.data.dataset}: {int((frame.split == 'train').sum())} train / "
                f"{int((frame.split == 'val').sum())} val / {int((frame.split == 'test').sum())} test images; "
                f"checkpoint selection on the {split} split"
                + (" (faithful: the original selected on test)" if split == "test" else " (honest validation)"))
    train_set = make_dataset(frame, "train", labels, train_transform(cfg.data), cfg.data.limit_train)
    select_set = make_dataset(frame, split, labels, eval_transform(cfg.data),
                              cfg.data.limit_test if split == "test" else 0)
    trainer.evaluate = make_evaluate(trainer, select_set, cfg.data.eval_batch_size)
    loader = trainer.make_loader(train_set, cfg.data.batch_size, shuffle=True, drop_last=cfg.data.drop_last,
                                 repeats=cfg.data.repeats)
    if len(loader) == 0:
        raise DataError(f"{len(train_set)} training images are fewer than one batch of {cfg.data.batch_size}")
    trainer.scheduler = cosine_schedule(optimizer, total_steps=max(1, trainer.total_steps(loader)), min_lr=o.min_lr,
                                        warmup_steps=o.warmup_steps)
    trainer.fit(loader)
    return run_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adnet.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", default=None, help="run directory to continue")
    add_no_test_flag(parser)
    cfg, args = parse_config(ADNetConfig, argv, parser=parser, example="optim.lr=1e-4 engine.epochs=2")

    def action():
        run_dir = run(cfg, args.resume)
        print(f"run directory: {run_dir}")
        test_after_training("adnet", run_dir, args.no_test, adnet_test.main)
    return run_cli("python -m adnet.train", action)


if __name__ == "__main__":
    cli_exit("python -m adnet.train", main)
