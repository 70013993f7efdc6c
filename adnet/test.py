"""Evaluate ADNet weights on a setting's test split: per-class AUROC (Wang order for NIH), raw and EMA, macro metrics.

    python -m adnet.test --run runs/adnet/nih_convnext/<ts>       # the run's config.yaml and checkpoints/best.pt
    python -m adnet.test -cfg adnet/configs/nih_convnext.yaml --weights runs/adnet/nih_convnext/<ts>/checkpoints/best.pt
    python -m adnet.test -cfg adnet/configs/nih_convnext.yaml --weights convnext_tiny_ADNet_IN1K_NIH.pth.tar
    python -m adnet.test --weights convnext_tiny_ADNet_IN1K_NIH.pth.tar     # a released file: its setting's config

``--weights`` takes our checkpoints (shared.engine format: raw and EMA weights are both evaluated, the better one
is kept — on the test split as the original did, or on the validation split with data.honest_validation=true)
or the authors' released ``{name}.pth.tar`` (converted through adnet.checkpoint's key map; ``--rename
REGEX=REPLACEMENT`` bridges other key names). ``--ten-crop``: the optional test-time ten-crop ensemble of spec
section 4 (mean sigmoid probability over TenCrop(test_size) of the floor(test_size / crop_pct) resize). Writes
results.json, test_metrics.md, predictions.npz and roc.png into the run directory (the checkpoint's run, or
``--run-dir``, or a new runs/adnet/<name>_eval/<ts>).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd adnet && python test.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import pandas as pd
import torch

from shared.cli import cli_exit, run_cli
from shared.config import add_config_args, load_config
from shared.engine import select_device
from shared.metrics.classification import render_table
from shared.plots import roc_plot
from shared.report import write_results

from adnet.checkpoint import CheckpointKeyError, load_weights
from adnet.config import ADNetConfig
from adnet.data import build_frame, eval_transform, make_dataset, selection_split, ten_crop_transform
from adnet.evaluate import (add_weights_args, auroc_mean, build_from_config, checkpoint_weights, eval_loader,
                            metrics_table, min_size_check, output_dir, predict, release_config,
                            rename_rules_from_args, table_to_metrics)


def evaluate_run(cfg: ADNetConfig, weights: str | Path, run_dir: str | Path, frame=None, labels=None,
                 extra_rules=(), extra_notes=(), ten_crop: bool = False) -> dict:
    """Evaluate ``weights`` (raw and EMA when present) and write results.json etc. into ``run_dir``.

    ``ten_crop``: every test (and validation) image is scored as the mean sigmoid probability of its ten crops
    (:func:`adnet.data.ten_crop_transform`) instead of the single centre crop; batches hold
    ``eval_batch_size // 10`` images (at least 1) so the forward stays the same size."""
    run_dir = Path(run_dir)
    if frame is None:
        frame, labels = build_frame(cfg.data)
    variants = checkpoint_weights(weights)
    device = select_device(cfg.engine.device)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.engine.amp) if device.type == "cuda" else None
    split = selection_split(cfg.data)
    tf = ten_crop_transform(cfg.data) if ten_crop else eval_transform(cfg.data)
    bs = max(1, cfg.data.eval_batch_size // 10) if ten_crop else cfg.data.eval_batch_size
    test_set = make_dataset(frame, "test", labels, tf, cfg.data.limit_test)
    loaders = {"test": eval_loader(test_set, bs, cfg.engine.num_workers)}
    if split == "val":
        val_set = make_dataset(frame, "val", labels, tf)
        loaders["val"] = eval_loader(val_set, bs, cfg.engine.num_workers)

    results, notes = {}, list(extra_notes)
    if ten_crop:
        notes.append(f"test-time ten-crop: mean sigmoid probability of TenCrop({cfg.data.test_size}) on the "
                     f"{cfg.data.test_size}/{cfg.data.crop_pct:g} resize (4 corners + centre, and flipped)")
    for variant, state in variants.items():
        model, _ = build_from_config(cfg, len(labels), load_pretrained=False)
        min_size_check(cfg, model)
        notes += load_weights(model, state, extra_rules=extra_rules, source_name=f"{weights} ({variant})")
        model.to(device)
        out = {}
        for name, loader in loaders.items():
            prob, true = predict(model, loader, device, amp_dtype, desc=f"{variant}/{name}")
            out[name] = (prob, true)
        results[variant] = out
        del model

    def score(variant):  # the selection split's mean AUROC
        prob, true = results[variant][split]
        return auroc_mean(true, prob)

    if cfg.eval.pick in results:
        chosen = cfg.eval.pick
    elif cfg.eval.pick in ("raw", "ema"):
        raise CheckpointKeyError(f"eval.pick={cfg.eval.pick} but {weights} has only {sorted(results)} weights")
    else:
        chosen = max(results, key=lambda v: (np.nan_to_num(score(v), nan=-1.0), v == "ema"))
    tables = {v: metrics_table(results[v]["test"][1], results[v]["test"][0], labels, cfg.data.dataset)
              for v in results}
    prob, true = results[chosen]["test"]
    table = tables[chosen]
    metrics = table_to_metrics(table)
    for variant, vt in tables.items():
        metrics[f"auroc_{variant}"] = {str(r): float(vt.loc[r, "auroc"]) for r in vt.index}
    if len(results) > 1:
        notes.append(f"raw and EMA weights evaluated; kept {chosen} (better mean AUROC on the {split} split"
                     + (", as the original did)" if split == "test" else ")"))
    notes.append("checkpoint selected on the test split (faithful to the original)" if split == "test"
                 else f"checkpoint selected on a patient-disjoint validation split ({cfg.data.val_fraction:.0%} "
                      f"of train patients, seed {cfg.data.val_seed})")
    if cfg.data.limit_test:
        notes.append(f"only the first {cfg.data.limit_test} test images (data.limit_test)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_results(run_dir, "adnet", cfg.name, metrics, published_key=cfg.published_key, notes=notes,
                  headline=["auroc/mean", "f1/mean", "recall/mean"])
    text = [f"# {cfg.name}: {cfg.data.dataset} test ({len(true)} images), {chosen} weights", "",
            render_table(table), ""]
    if len(tables) > 1:   # per-class AUROC of every variant side by side (same row order: Wang for NIH)
        side = pd.DataFrame({f"auroc {v}": vt["auroc"] for v, vt in tables.items()})
        text += ["## per-class AUROC, raw vs EMA", "", render_table(side), ""]
    for variant in results:
        text.append(f"- mean AUROC {variant}: {metrics[f'auroc_{variant}']['mean']:.4f}")
    (run_dir / "test_metrics.md").write_text("\n".join(text) + "\n")
    np.savez_compressed(run_dir / "predictions.npz", prob=prob, labels=true, classes=np.array(labels))
    roc_plot(true, prob, labels, run_dir / "roc.png", f"ADNet {cfg.name} ({chosen})")
    print("\n".join(text))
    return {"metrics": metrics, "chosen": chosen, "table": table, "run_dir": run_dir}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adnet.test", description=__doc__.split("\n\n")[0])
    add_weights_args(parser, required=False)
    parser.add_argument("--run", default=None, help="run directory written by adnet.train: its config.yaml and "
                        "checkpoints/best.pt (-cfg / --weights override them); results go into it")
    parser.add_argument("--run-dir", default=None,
                        help="where to write results.json (default: the run the weights come from when they are "
                             "RUN/checkpoints/*.pt, else a new <runs_root>/adnet/<config name>_eval/<timestamp>)")
    parser.add_argument("--ten-crop", action="store_true",
                        help="test-time ten-crop ensemble: mean sigmoid probability of TenCrop(test_size) on the "
                             "floor(test_size / crop_pct) resize (10x the compute)")
    add_config_args(parser, required=False)
    args = parser.parse_args(argv)
    if args.run:   # the one convention of the five test CLIs: --run RUN alone evaluates that run
        args.config = args.config or str(Path(args.run) / "config.yaml")
        args.weights = args.weights or str(Path(args.run) / "checkpoints" / "best.pt")
    if not args.weights:
        parser.error("give --run RUN_DIR, or --weights CHECKPOINT (with -cfg CONFIG for a file that is not released)")
    try:   # without -cfg, a released {name}.pth.tar is evaluated with its own setting's config
        cfg = load_config(ADNetConfig, args.config or release_config(args.weights), args.overrides)
    except ValueError as err:      # ConfigError included
        parser.error(str(err))
    rules = rename_rules_from_args(parser, args)
    def action():
        run_dir = output_dir(cfg, args.weights, args.run_dir, "eval")
        out = evaluate_run(cfg, args.weights, run_dir, extra_rules=rules, ten_crop=args.ten_crop)
        print(f"results: {Path(out['run_dir']).absolute() / 'results.json'}")
    return run_cli("python -m adnet.test", action)

if __name__ == "__main__":
    cli_exit("python -m adnet.test", main)
