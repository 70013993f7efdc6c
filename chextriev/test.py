"""Evaluate a trained CheXtriev model as the paper does: leave-one-out retrieval within the test split.

    python -m chextriev.test --run runs/chextriev/v6/<timestamp> [--set eval.drop_self=id] [-cfg CONFIG]
    cd chextriev && python test.py --run RUN_DIR

The config (``data.prepared`` included) is the run's own ``RUN_DIR/config.yaml``; ``-cfg`` replaces it and
``--set`` overrides keys of either. The prepared data must carry the run's label policy.

Embeds every test image (the model's retrieval embedding), searches with faiss (exact inner product on
L2-normalised vectors, ``shared.metrics.retrieval.knn_search``) and writes into RUN_DIR/retrieval/:

    table_{9,17}cls_top{k}_skip{0,1}.txt/.csv   mAP / mHR / mRR per class + Class Average + Class Weighted Average
    subgroups_9cls.csv                           the same for view AP/PA, sex M/F, age 20-40/40-60/60-80/80-100
Averages use ``eval.empty_class`` (default "zero", the original's: a class without query rows — possible in a
subgroup or in skip mode — counts as 0.0 and stays in the averages); every .txt table ends with a line naming it.
    topk.csv                                     per query: image_id, the top-k retrieved image_ids and scores
    per_query_9cls_top10.csv                     the original's per-query CSV layout
    strip_<n>.png                                a query next to its top-5 with their labels
and RUN_DIR/results.json (shared.report; 9 classes, skip=False = the paper's setting) -> ``python -m shared.report``.
Self-exclusion: ``eval.drop_self: first`` drops the first result (the original; wrong for duplicate images),
``id`` drops the query by index (the fix).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # `cd chextriev && python test.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import pandas as pd
import torch

from shared.cli import cli_exit
from shared.config import ConfigError, add_config_args, load_config
from shared.data.labels import IMAGENOME_FINDINGS
from shared.engine import load_checkpoint, load_model_weights, select_device, weights_from_checkpoint
from shared.metrics.retrieval import (AGE_BINS, CLASS_AVERAGE, SIDE_AWARE_CLASSES, knn_search, per_query_metrics,
                                      retrieval_metrics, side_aware_labels, subgroup_mask)
from shared.report import write_results

from chextriev.config import ChextrievConfig, protocol_note
from chextriev.models import build_model
from chextriev.train import METHOD, load_adjacency, make_datasets, open_prepared, predict

SUBGROUPS = ([("view", v) for v in ("AP", "PA")] + [("sex", s) for s in ("M", "F")]
             + [("age_bin", b) for b in AGE_BINS])


# ---------------------------------------------------------------------------------------------- tables
def _fmt(value: float) -> str:
    """The original's number format: round to 3 decimals, no trailing zeros (0.65, 0.068)."""
    if value is None or not np.isfinite(value):
        return "nan"
    return repr(round(float(value), 3))


def format_table(table: pd.DataFrame) -> str:
    """A retrieval table as the original printed it (PrettyTable look: centred cells, +---+ rules)."""
    header = ["Label Name", *table.columns]
    rows = [[str(name), *(_fmt(v) for v in table.loc[name])] for name in table.index]
    widths = [max(len(r[c]) for r in [header, *rows]) + 2 for c in range(len(header))]
    rule = "+" + "+".join("-" * w for w in widths) + "+"

    def line(cells):
        return "|" + "|".join(_center(c, w) for c, w in zip(cells, widths)) + "|"

    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def _center(text: str, width: int) -> str:
    """PrettyTable's centring: the extra space of an odd margin goes to the right... as str.center does when
    the text length and width differ in parity, except PrettyTable puts it on the left for even margins."""
    pad = width - len(text)
    left = pad // 2
    if pad % 2 and len(text) % 2 == 0:
        left += 1
    return " " * left + text + " " * (pad - left)


def retrieval_tables(labels: np.ndarray, neighbors: np.ndarray, ks: Sequence[int], class_names: Sequence[str],
                     skip_modes: Sequence[bool] = (False,), empty_class: str = "zero") -> dict:
    """{(k, skip): DataFrame} of ``shared.metrics.retrieval.retrieval_metrics``: the one table function this CLI
    (and the fixture test) uses. ``empty_class="zero"`` (default) is the original's averaging — a class without
    query rows counts as 0.0 and stays in both averages — so subgroup and skip tables compare with published
    ones; "exclude" leaves such a class out (NaN)."""
    return {(int(k), bool(s)): retrieval_metrics(labels, neighbors, int(k), skip_no_hit=bool(s),
                                                 class_names=list(class_names), empty_class=empty_class)
            for k in ks for s in skip_modes}


def convention_note(table: pd.DataFrame) -> str:
    """One line saying how the table's averages treat classes without query rows (written under every table)."""
    conv = table.attrs.get("empty_class", "exclude")
    if conv == "zero":
        text = ("averages: empty_class=zero (original convention, comparable with published tables): a class "
                "without query rows counts as 0.0 and stays in Class Average / Class Weighted Average")
        empty = table.attrs.get("zeroed", [])
    else:
        text = ("averages: empty_class=exclude (not the original's): a class without query rows is nan and left "
                "out of Class Average / Class Weighted Average")
        empty = table.attrs.get("excluded", [])
    return text + (f"; empty here: {', '.join(empty)}" if empty else "; no class is empty here")


def search(embeddings: np.ndarray, k: int, drop_self: str) -> tuple[np.ndarray, np.ndarray]:
    return knn_search(embeddings, k, exclude_self=True, faithful_drop_first=(drop_self == "first"))


# ---------------------------------------------------------------------------------------------- picture
def save_strip(path: Path, query: int, neighbors: Sequence[int], dataset, labels: np.ndarray,
               class_names: Sequence[str], ids: Sequence[str]) -> Path:
    """A query image next to its top-5 retrievals, each titled with its labels (relevant ones in green)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from shared.data.images import load_image

    def short(lab):
        names = [class_names[j] for j in np.flatnonzero(lab)]
        return "\n".join(names) if names else "no finding"

    items = [query, *list(neighbors)[:5]]
    fig, axes = plt.subplots(1, len(items), figsize=(2.6 * len(items), 3.4))
    qset = set(np.flatnonzero(labels[query]))
    for n, (ax, i) in enumerate(zip(np.atleast_1d(axes), items)):
        row = dataset.frame.iloc[dataset.rows[i]]
        ax.imshow(load_image(row["path"]), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        shared_cls = bool(qset & set(np.flatnonzero(labels[i])))
        colour = "black" if n == 0 else ("green" if shared_cls else "red")
        ax.set_title(("query" if n == 0 else f"#{n}") + f" {ids[i][:8]}\n" + short(labels[i]), fontsize=7,
                     color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------- run
def evaluate_embeddings(embeddings: np.ndarray, anatomy_labels: np.ndarray, frame: pd.DataFrame,
                        out_dir: Path, ks: Sequence[int] = (3, 5, 10), drop_self: str = "first",
                        side_aware: bool = True, skip_modes: Sequence[bool] = (False, True),
                        subgroups: bool = True, verbose: bool = True, empty_class: str = "zero") -> dict:
    """Everything test.py reports, from embeddings (N, D), anatomy labels (N, 18, 9) and the index rows of the
    same N images. Returns {"tables9": {(k, skip): df}, "tables17": ..., "subgroups": df, "neighbors": ...}.
    ``empty_class``: how every table's averages treat a class without query rows (see :func:`retrieval_tables`);
    each .txt table and the subgroup CSV say which convention they use."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels9 = anatomy_labels.any(1).astype(np.int64)
    kmax = max(ks)
    scores, nbrs = search(embeddings, kmax, drop_self)
    ids = frame["image_id"].astype(str).tolist()
    result = {"neighbors": nbrs, "scores": scores}
    sets = [("9cls", labels9, IMAGENOME_FINDINGS)]
    if side_aware:
        sets.append(("17cls", side_aware_labels(anatomy_labels), SIDE_AWARE_CLASSES))
    for tag, lab, names in sets:
        tables = retrieval_tables(lab, nbrs, ks, names, skip_modes, empty_class)
        result["tables" + tag[:-3]] = tables
        for (k, skip), table in tables.items():
            stem = f"table_{tag}_top{k}_skip{int(skip)}"
            table.to_csv(out_dir / f"{stem}.csv")
            text = format_table(table)
            note = convention_note(table)
            (out_dir / f"{stem}.txt").write_text(f"{text}\n{note}\n")
            if verbose and not skip:
                print(f"\n{tag}, top {k}, skip={skip} ({len(lab)} images, {int(lab.sum())} query rows)\n{text}\n"
                      f"{note}")
    topk = pd.DataFrame({"query_index": np.arange(len(ids)), "image_id": ids})
    for r in range(kmax):
        topk[f"top{r + 1}"] = [ids[j] if j >= 0 else "" for j in nbrs[:, r]]
    for r in range(kmax):
        topk[f"score{r + 1}"] = scores[:, r]
    topk.to_csv(out_dir / "topk.csv", index=False)
    per_query_metrics(labels9, nbrs, kmax, IMAGENOME_FINDINGS).to_csv(
        out_dir / f"per_query_9cls_top{kmax}.csv", index=False)
    if subgroups:
        rows = []
        for key, value in SUBGROUPS:
            try:
                mask = subgroup_mask(frame, **{key: value})
            except KeyError:
                continue
            if mask.sum() <= kmax:
                rows.append({"subgroup": f"{key}={value}", "images": int(mask.sum()), "k": None})
                continue
            _, sub_nb = search(embeddings[mask], kmax, drop_self)
            for k in ks:
                t = retrieval_metrics(labels9[mask], sub_nb, k, class_names=IMAGENOME_FINDINGS,
                                      empty_class=empty_class)
                rows.append({"subgroup": f"{key}={value}", "images": int(mask.sum()), "k": k,
                             **{m: t.loc[CLASS_AVERAGE, m] for m in ("mAP", "mHR", "mRR")},
                             "empty_class": empty_class,
                             "empty_classes": ";".join(t.attrs["zeroed"] or t.attrs["excluded"])})
        pd.DataFrame(rows).to_csv(out_dir / "subgroups_9cls.csv", index=False)
        result["subgroups"] = pd.DataFrame(rows)
    return result


def results_metrics(tables: dict) -> dict:
    """results.json metrics: {"mAP@k": {class: v, "Class Average": v, ...}, "mHR@k": ..., "mRR@k": ...}."""
    out = {}
    for (k, skip), table in sorted(tables.items()):
        if skip:
            continue
        for m in ("mAP", "mHR", "mRR"):
            out[f"{m}@{k}"] = {str(i): float(v) for i, v in table[m].items()}
    return out


def run_test(cfg: ChextrievConfig, run_dir: str | Path, checkpoint: Optional[str] = None) -> dict:
    run_dir = Path(run_dir)
    prepared = open_prepared(cfg)
    device = select_device(cfg.engine.device)
    # every weight, the frozen CNN's included, comes from the checkpoint: no ImageNet file or download needed
    model = build_model(dataclasses.replace(cfg.model, pretrained=False, pretrained_path=None),
                        load_adjacency(cfg, prepared))
    ckpt_path = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "best.pt"
    if not ckpt_path.exists():
        alt = run_dir / "checkpoints" / "last.pt"
        if checkpoint or not alt.exists():
            raise FileNotFoundError(f"checkpoint not found: {ckpt_path} (train first: python -m chextriev.train)")
        ckpt_path = alt
    load_model_weights(model, weights_from_checkpoint(load_checkpoint(ckpt_path, map_location="cpu")))
    model.to(device).eval()
    split = cfg.eval.split
    dataset = make_datasets(cfg, prepared, model, (split,), device=device)[split]
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.data.eval_batch_size, shuffle=False,
                                         num_workers=min(cfg.engine.num_workers, 4))
    pred = predict(model, loader, device)
    base = getattr(dataset, "base", dataset)
    frame = prepared.frame.iloc[base.rows].reset_index(drop=True)
    anatomy = prepared.labels[base.rows]
    out_dir = run_dir / "retrieval"
    res = evaluate_embeddings(pred["embedding"].numpy(), anatomy, frame, out_dir, cfg.eval.ks, cfg.eval.drop_self,
                              cfg.eval.side_aware, cfg.eval.skip_modes, cfg.eval.subgroups,
                              empty_class=cfg.eval.empty_class)
    np.save(out_dir / "embeddings.npy", pred["embedding"].numpy().astype(np.float32))
    ids = frame["image_id"].astype(str).tolist()
    labels9 = anatomy.any(1).astype(np.int64)
    queries = [i for i in range(len(ids)) if labels9[i].any()][: cfg.eval.strips]
    for n, q in enumerate(queries):
        save_strip(out_dir / f"strip_{n}.png", q, res["neighbors"][q], base, labels9, IMAGENOME_FINDINGS, ids)
    notes = [f"{split} split, {len(ids)} images, leave-one-out within the split (train never indexed)",
             f"self-exclusion: {'drop first result (original)' if cfg.eval.drop_self == 'first' else 'by id (fix)'}",
             "9 classes, skip=False (the paper's setting); 17-class and skip tables under retrieval/",
             protocol_note(cfg),
             f"prepared data: {prepared.dir.resolve()} (label_policy={prepared.meta.get('label_policy')}, "
             f"{len(prepared.frame)} images)",
             f"empty classes: {cfg.eval.empty_class}"
             + (" (original convention: a class without query rows counts as 0 in the averages)"
                if cfg.eval.empty_class == "zero" else " (left out of the averages; not the original's)")]
    kmax = max(cfg.eval.ks)
    write_results(run_dir, METHOD, cfg.name, results_metrics(res["tables9"]), published_key=cfg.published_key,
                  notes=notes, headline=[(f"{m}@{k}", CLASS_AVERAGE) for k in cfg.eval.ks for m in ("mAP",)]
                  + [(f"mHR@{kmax}", CLASS_AVERAGE), (f"mRR@{kmax}", CLASS_AVERAGE)])
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a CheXtriev run (retrieval tables, top-k CSV, strips)")
    parser.add_argument("--run", required=True, help="run directory written by chextriev.train")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: RUN/checkpoints/best.pt)")
    args = add_config_args(parser, required=False, example="eval.drop_self=id").parse_args(argv)
    config = Path(args.config) if args.config else Path(args.run) / "config.yaml"
    if not config.is_file():
        parser.error(f"{config} not found: give the run directory chextriev.train wrote (it holds config.yaml), "
                     "or -cfg CONFIG")
    try:
        cfg = load_config(ChextrievConfig, config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    run_test(cfg, args.run, args.checkpoint)   # user errors become one `prog: error:` line in cli_exit
    print(f"\nwrote {Path(args.run).resolve() / 'retrieval'} and {Path(args.run).resolve() / 'results.json'}")
    return 0


if __name__ == "__main__":
    cli_exit("python -m chextriev.test", main)
