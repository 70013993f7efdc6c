"""Shared pieces of train/test/knn: build the configured model, predict a split, the metrics tables."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from shared.data.labels import NIH_WANG_ORDER
from shared.metrics.classification import classification_table
from shared.progress import progress

from .checkpoint import (CheckpointKeyError, extract_state_dict, load_backbone_weights, load_start_weights,
                         load_weights, parse_rename_rules, read_checkpoint)
from .config import ADNetConfig
from .model import ADNet, build_model

# shared.metrics' column names -> the names the paper's tables use
METRIC_NAMES = {"auroc": "auroc", "ap": "ap", "f1": "f1", "accuracy": "accuracy", "sensitivity": "recall",
                "specificity": "specificity", "precision": "precision"}


def build_from_config(cfg: ADNetConfig, num_classes: int, load_pretrained: bool = True) -> tuple[ADNet, list[str]]:
    """The model of ``cfg.model`` for ``num_classes`` classes; loads ``pretrained_path`` (a classifier of another
    size is re-initialised: fine-tuning from the 1000-class IN1K or the 21-class ALL weights)."""
    m = cfg.model
    classes = m.num_classes if m.num_classes is not None else num_classes
    if classes != num_classes:
        raise ValueError(f"model.num_classes={classes} but the {cfg.data.dataset} setting has {num_classes} classes")
    notes: list[str] = []
    for key in ("pretrained_path", "backbone_weights") if load_pretrained else ():
        path = getattr(m, key)
        if path and not Path(path).expanduser().is_file():
            raise FileNotFoundError(
                f"model.{key} not found: {path}. The published settings start from the authors' released weights "
                f"(github.com/Lab-LVM/ADNet/releases/download/v0.0.1/<name>.pth.tar; download them yourself, "
                f"nothing is downloaded here); model.backbone_weights takes a local timm ImageNet state dict instead "
                f"(a deviation); set both to null to start from random weights.")
    model = build_model(m.name, classes, head_dim=m.head_dim, dft_size=m.dft_size, drop_path_rate=m.drop_path_rate,
                        backbone_kwargs=dict(m.backbone_kwargs))
    if load_pretrained and m.pretrained_path:
        path = Path(m.pretrained_path).expanduser()
        state, why = load_start_weights(path, ema=m.pretrained_ema)
        notes = load_weights(model, state, extra_rules=parse_rename_rules(m.pretrained_rename),
                             drop_head_if_mismatch=True, source_name=str(path))
        notes.insert(0, why)
    elif load_pretrained and m.backbone_weights:
        notes = load_backbone_weights(model, Path(m.backbone_weights).expanduser())
    return model, notes


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def release_config(weights: str | Path) -> Path:
    """The setting config of a released ``{name}.pth.tar`` (the config whose ``model.name`` is the file's name), so
    ``adnet.test --weights convnext_tiny_ADNet_IN1K_NIH.pth.tar`` evaluates it on its published test protocol."""
    from shared.config import load_config
    name = Path(weights).name.split(".")[0]
    settings = {load_config(ADNetConfig, p).model.name: p for p in sorted(CONFIG_DIR.glob("[!_]*.yaml"))
                if p.stem not in ("base", "demo")}
    if name not in settings:
        raise ValueError(f"{weights}: no setting config for a released file named {name!r} (known: "
                         f"{', '.join(sorted(settings))}); pass -cfg CONFIG")
    return settings[name]


def output_dir(cfg: ADNetConfig, weights: str | Path, explicit: str | None, suffix: str) -> Path:
    """Where test/knn write: ``explicit``, else the checkpoint's own run (runs/.../checkpoints/best.pt), else a new
    runs/adnet/<name>_<suffix>/<timestamp>. Raises FileNotFoundError for missing weights."""
    from shared.engine import create_run_dir
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    if explicit:
        return Path(explicit)
    if weights.parent.name == "checkpoints" and (weights.parent.parent / "config.yaml").exists():
        return weights.parent.parent
    return create_run_dir("adnet", f"{cfg.name}_{suffix}", root=cfg.runs_root)


def min_size_check(cfg: ADNetConfig, model: ADNet) -> None:
    for key in ("train_size", "test_size"):
        size = getattr(cfg.data, key)
        if size < model.min_input_size:
            raise ValueError(f"data.{key}={size} is below ADNet's minimum input of {model.min_input_size} px "
                             f"(dft_size={model.dft_size})")


def eval_loader(dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device, amp_dtype: torch.dtype | None = None,
            embed: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """(probabilities or embeddings (N, C) float32, labels (N, K)) over ``loader`` in order.

    Multi-crop batches (B, n_crops, C, H, W) (:func:`adnet.data.ten_crop_transform`) give each image the mean of
    its crops' sigmoid probabilities (a probability-averaged ensemble; not for embeddings)."""
    model.eval()
    outs, labels = [], []
    for batch in progress(loader, desc=desc, unit="batch"):
        x = batch["image"].to(device, non_blocking=True)
        crops = x.shape[1] if x.dim() == 5 else 0
        if crops and embed:
            raise ValueError("multi-crop batches give probabilities only, not k-NN embeddings")
        if crops:
            x = x.flatten(0, 1)
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None and not embed \
            else contextlib.nullcontext()
        with ctx:
            out = model.forward_embedding(x) if embed else model(x)
        out = out.float() if embed else torch.sigmoid(out.float())
        if crops:
            out = out.unflatten(0, (-1, crops)).mean(1)
        outs.append(out.cpu())
        labels.append(batch["labels"].float())
    return torch.cat(outs).numpy(), torch.cat(labels).numpy()


def metrics_table(y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str], dataset: str) -> pd.DataFrame:
    """Per-class + mean table (shared.metrics), rows in Wang order for NIH, columns renamed (recall)."""
    table = classification_table(y_true, y_prob, list(class_names), threshold=0.5).rename(columns=METRIC_NAMES)
    if dataset == "nih":
        excluded = table.attrs.get("excluded", [])
        table = table.loc[list(NIH_WANG_ORDER) + ["mean"]]
        table.attrs["excluded"] = excluded
    return table


def table_to_metrics(table: pd.DataFrame, per_class: Sequence[str] = ("auroc",)) -> dict[str, dict[str, float]]:
    """{metric: {class...: v, "mean": v}} for results.json (per-class rows only for ``per_class`` metrics)."""
    out = {}
    for col in table.columns:
        rows = table.index if col in per_class else ["mean"]
        out[col] = {str(r): float(table.loc[r, col]) for r in rows}
    return out


def auroc_mean(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    from shared.metrics.classification import per_class_auroc
    values = per_class_auroc(y_true, y_prob)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def add_weights_args(parser, required: bool = True) -> None:
    """The weights options every evaluation CLI (adnet.test, adnet.knn) takes, defined once."""
    parser.add_argument("--weights", required=required, help="our checkpoint (.pt) or an original {name}.pth.tar")
    parser.add_argument("--rename", nargs="+", action="extend", default=[], metavar="REGEX=REPL",
                        help="extra key-renaming rules to the authors' names, for checkpoints with other key names "
                             "(applied before the built-in map; see adnet/README.md)")


def rename_rules_from_args(parser, args) -> list[tuple[str, str]]:
    """``--rename`` -> rule pairs; a malformed rule is a usage error naming it."""
    try:
        return parse_rename_rules(args.rename)
    except ValueError as err:
        parser.error(f"--rename: {err}")


def checkpoint_weights(path: str | Path) -> dict[str, Mapping]:
    """{"raw": state, "ema": state} from one of our checkpoints; {"weights": state} for any other file."""
    return checkpoint_variants(path)[0]


def pick_variant(variants: Mapping[str, Mapping], best_source: str | None, choice: str = "auto") -> str:
    """Which entry of :func:`checkpoint_variants` to use when only one is evaluated (k-NN).

    ``auto``: the weights best.pt was selected on (``best_source``), else EMA when present, else the only one.
    ``raw`` / ``ema``: that one (``raw`` also names the single weights of an original file)."""
    if choice == "auto":
        if best_source in variants:
            return best_source
        return "ema" if "ema" in variants else next(iter(variants))
    if choice in variants:
        return choice
    if choice == "raw" and list(variants) == ["weights"]:
        return "weights"
    raise CheckpointKeyError(f"{choice} weights requested but the checkpoint holds only {sorted(variants)}")


def checkpoint_variants(path: str | Path) -> tuple[dict[str, Mapping], str | None]:
    """(:func:`checkpoint_weights`'s dict, the ``best_source`` our best.pt records or None)."""
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and obj.get("format") == 1 and "model" in obj:   # shared.engine checkpoint
        out = {"raw": extract_state_dict(obj["model"])}
        if obj.get("ema"):
            out["ema"] = extract_state_dict(obj["ema"])
        source = obj.get("best_source")
        return out, (source if source in out else None)
    try:
        return {"weights": extract_state_dict(obj)}, None
    except CheckpointKeyError as err:
        raise CheckpointKeyError(f"{path}: {err}") from None
