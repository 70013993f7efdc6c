"""Test HAM: classification AUROC table, anomaly AUROC, T(IoU) / T(IoBB) per class (streaming).

    python -m ham.test --run runs/ham/nih_cls_fold1/20261121-2300          # config.yaml + checkpoints/best.pt
    python -m ham.test -cfg ham/configs/nih_cls_fold1.yaml -w best.pt --out OUT_DIR
    python -m ham.test -cfg ham/configs/nih_official_split.yaml -w resnet50_best_auc.pth --out OUT   # authors' model

Writes into the run directory (or --out): results.json (shared.report format), test_auroc.csv, test_tiou.csv,
test_tiobb.csv, test_log.txt (the original's result lines), roc.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd ham && python test.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch

from shared.cli import cli_exit
from shared.config import ConfigError, add_config_args, load_config
from shared.engine import make_loader, select_device
from shared.plots import roc_plot
from shared.report import write_results

from ham.checkpoint import load_weights
from ham.config import HAMConfig, ModelConfig, build_model
from ham.evaluation import auroc_dict, auroc_table, localize, original_log_lines, predict
from ham.train import eval_sets, prepare_data


def load_run(cfg_path, weights, run, overrides=()):
    """(cfg, checkpoint path, output dir, config name) from --run or -cfg/-w."""
    if run:
        run = Path(run)
        cfg = load_config(HAMConfig, run / "config.yaml", overrides)
        ckpt = Path(weights) if weights else (run / "checkpoints" / "best.pt")
        if not weights and not ckpt.exists():   # an explicit --weights is never replaced by another file
            ckpt = run / "checkpoints" / "last.pt"
        named = cfg.name != HAMConfig.name   # ham.train records the config's name; older runs say only "ham"
        return cfg, ckpt, run, cfg.name if named else run.parent.name
    if not cfg_path or not weights:
        raise ConfigError("give --run RUN_DIR, or -cfg CONFIG together with -w CHECKPOINT")
    return load_config(HAMConfig, cfg_path, overrides), Path(weights), None, Path(cfg_path).stem


def load_model(cfg: HAMConfig, ckpt: Path, num_classes: int, device) -> torch.nn.Module:
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}; check --weights (or --run RUN_DIR, which uses "
                                "RUN/checkpoints/best.pt)")
    model_cfg = ModelConfig(**{**cfg.model.__dict__, "pretrained": False, "pretrained_path": None,
                               "init_weights": None})
    model = build_model(model_cfg, num_classes)
    print(load_weights(model, ckpt))
    return model.to(device).eval()


def localisation_checkpoints(cfg: HAMConfig, ckpt: Path, run_dir: Path | None) -> dict[str, Path]:
    """{"tiou": path, "tiobb": path}: with ``eval.loc_checkpoints: by_metric`` and a run directory, the run's
    best_tiou.pt / best_tiobb.pt where ham.train wrote them (as the original read its localisation results);
    otherwise ``ckpt`` for both (an explicit -w file, or a run without localisation validation)."""
    paths = {"tiou": ckpt, "tiobb": ckpt}
    if cfg.eval.loc_checkpoints == "by_metric" and run_dir is not None:
        for name in paths:
            found = Path(run_dir) / "checkpoints" / f"best_{name}.pt"
            if found.is_file():
                paths[name] = found
    return paths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Test HAM: AUROC + T(IoU)/T(IoBB)")
    add_config_args(parser, required=False)
    parser.add_argument("-w", "--weights", default=None, help="our checkpoint (.pt) or the authors' released .pth; "
                        "default RUN/checkpoints/best.pt")
    parser.add_argument("--run", default=None, help="run directory written by ham.train")
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: engine.device)")
    args = parser.parse_args(argv)
    try:
        cfg, ckpt, run_dir, config_name = load_run(args.config, args.weights, args.run, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    out_dir = Path(args.out) if args.out else (run_dir or Path("."))
    out_dir.mkdir(parents=True, exist_ok=True)

    classes, boxes, splits = prepare_data(cfg)
    device = select_device(args.device or cfg.engine.device)
    model = load_model(cfg, ckpt, len(classes), device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.engine.amp)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None and device.type == "cuda" \
        else None
    cls_set, loc_set = eval_sets(cfg, splits.test, splits.test_box_ids, classes, boxes)
    kw = dict(shuffle=False, train=False, num_workers=cfg.engine.num_workers, pin_memory=device.type == "cuda")
    pred = predict(model, make_loader(cls_set, cfg.optim.eval_batch_size, **kw), device, autocast, cfg.loss,
                   desc="test")
    auc = auroc_dict(pred.y_true, pred.y_score, classes)
    table = auroc_table(pred, classes)
    table.to_csv(out_dir / "test_auroc.csv")
    metrics: dict = {"auroc": auc, "ano_auroc": table.attrs["ano_auroc"]}
    excluded = [c for c in classes if np.isnan(auc[c])]
    t_iou = None
    loc_paths = localisation_checkpoints(cfg, ckpt, run_dir if not args.weights else None)
    if loc_set is not None:
        tables = {}
        for path in dict.fromkeys(loc_paths.values()):   # one pass per distinct checkpoint
            loc_model = model if path == ckpt else load_model(cfg, path, len(classes), device)
            tables[path] = localize(loc_model, make_loader(loc_set, cfg.optim.eval_batch_size, **kw), device,
                                    classes, cfg.eval.loc_threshold, autocast, desc="test-loc").tables()
        t_iou, t_iobb = tables[loc_paths["tiou"]][0], tables[loc_paths["tiobb"]][1]
        t_iou.to_csv(out_dir / "test_tiou.csv")
        t_iobb.to_csv(out_dir / "test_tiobb.csv")
        keep = lambda df: df.drop(index=[c for c in df.attrs["excluded"]])  # noqa: E731
        metrics["t_iou"] = keep(t_iou)
        metrics["t_iobb"] = keep(t_iobb)
    roc_plot(pred.y_true, pred.y_score, classes, out_dir / "roc.png", "HAM: ROC per class")
    notes = [f"checkpoint {ckpt}", f"{len(cls_set)} test images, {0 if loc_set is None else len(loc_set)} with boxes"]
    if loc_set is not None and set(loc_paths.values()) != {ckpt}:
        notes.append(f"T(IoU) from {loc_paths['tiou']}, T(IoBB) from {loc_paths['tiobb']} (the original's best "
                     "checkpoints by each localisation metric; eval.loc_checkpoints=best reads every table from "
                     f"{ckpt.name})")
    notes += list(splits.notes)
    if excluded:
        notes.append(f"AUROC NaN (no positives or no negatives) and excluded from the mean: {excluded} "
                     "(the original set it to 0 and averaged it)")
    if np.isnan(metrics["ano_auroc"]):
        notes.append("anomaly AUROC NaN: the test set has only normal or only abnormal images")
    write_results(out_dir, "ham", config_name, metrics, published_key=cfg.published_key, notes=notes,
                  headline=[("auroc", "mean"), "ano_auroc"] + ([("t_iou/0.1", "mean"), ("t_iou/0.5", "mean")]
                                                             if t_iou is not None else []))
    lines = original_log_lines(auc, t_iou)
    lines.append(f"Test-Ano: AUC {metrics['ano_auroc']:.4f}")
    (out_dir / "test_log.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results: {Path(out_dir).absolute() / 'results.json'}")
    return {"auroc": auc, "ano_auroc": metrics["ano_auroc"], "t_iou": t_iou,
            "t_iobb": None if t_iou is None else t_iobb, "out_dir": out_dir}


if __name__ == "__main__":
    cli_exit("python -m ham.test", main)
