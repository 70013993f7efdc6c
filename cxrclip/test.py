"""Evaluate CXR-CLIP: zero-shot classification and image<->text retrieval.

    python -m cxrclip.test --run runs/cxrclip/r50_m/<timestamp>        # our run (config, best.pt, tokenizer)
    python -m cxrclip.test -cfg cxrclip/configs/r50_mcc.yaml --weights r50_mcc.tar --trust-checkpoint

Which evaluations run is set by the ``eval:`` section of the config: image<->text retrieval (MIMIC or OpenI root,
or an (image, text) CSV), binary zero-shot per class (MIMIC / CheXpert root, or a RSNA / SIIM / VinDr
classification CSV), CheXpert5x200 (ensemble zero-shot, and retrieval against its report impressions). Tables are
printed, and results.json + report.md (ours vs published, also printed by ``python -m shared.report RUN``) are written
to the run directory (or to runs/cxrclip/<name>-eval/<timestamp>/ for released weights).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd cxrclip && python test.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import argparse
import warnings

import pandas as pd
import torch

from cxrclip.config import TrainConfig
from cxrclip.data import eval_image_paths, eval_transform, openi_frontal, read_classification_csv
from cxrclip.evaluate import (binary_zeroshot, embed_images, embed_texts, ensemble_scores, load_class_prompts,
                              retrieval)
from cxrclip.figures import save_confusion_matrix, save_retrieval_strip
from cxrclip.prompts import chexpert5x200_class_prompts
from cxrclip.loading import add_weights_args, load_from_args
from shared.cli import cli_exit
from shared.data import chexpert, mimic, openi
from shared.data.images import check_frame_images
from shared.engine import create_run_dir
from shared.metrics.classification import render_table
from shared.metrics.zeroshot import multiclass_accuracy
from shared.report import report_run, write_results


def study_frame(root: str, split: str, layout: str = "mimic") -> pd.DataFrame:
    """One row per study (first frontal image) with its labels and, for MIMIC, the retrieval text."""
    if layout == "chexpert":
        return chexpert.read_index(root, split=split, uncertain="zeros")
    frame = mimic.read_index(root, labeler="chexpert", uncertain="zeros", with_reports=True)
    frame = frame[frame["split"] == split]
    frontal = frame["view"].astype(str).str.upper().isin(["PA", "AP"])
    frame = frame.assign(_lateral=(~frontal).astype(int)).sort_values(["study_id", "_lateral", "path"])
    frame = frame.drop_duplicates("study_id").drop(columns="_lateral").reset_index(drop=True)
    # the retrieval target: the longer section by length (the original compared strings alphabetically)
    sections = frame[["findings", "impression"]].to_dict("records")
    return frame.assign(text=[mimic.longer_section(report) for report in sections])


def retrieval_frame(root: str, layout: str = "mimic", split: str = "test", image_root: str | None = None,
                    projections_csv: str | None = None) -> pd.DataFrame:
    """``path`` + ``text`` (the retrieval target) rows. mimic: one frontal-first image per study of ``split``;
    openi: one frontal image per report (``data.openi_frontal``: 3,955 pairs), against its report; csv: the original's (image, text) test CSVs as they are.
    The target is the report's longer section (by length); rows with no text are left out."""
    if layout == "mimic":
        frame = study_frame(root, split)
    elif layout == "openi":
        frame = openi_frontal(openi.read_reports(root, per="image"), projections_csv)
        sections = frame[["findings", "impression"]].to_dict("records")
        frame = frame.assign(text=[mimic.longer_section(report) for report in sections])
    else:
        frame = pd.read_csv(root)
        missing = {"image", "text"} - set(frame.columns)
        if missing:
            raise ValueError(f"{root}: missing column(s) {sorted(missing)}; a retrieval CSV has image, text")
        base = Path(image_root) if image_root else Path(root).parent
        frame = pd.DataFrame({"path": eval_image_paths(frame["image"], base, root),
                              "text": frame["text"].fillna("").astype(str).str.strip()})
    empty = frame["text"] == ""
    if empty.any():   # a target nobody can retrieve: said, not silently dropped
        warnings.warn(f"retrieval ({layout} {root}): {int(empty.sum())} of {len(frame)} images have no report text "
                      "and are left out", stacklevel=2)
    return frame[~empty].reset_index(drop=True)


def decodable(frame: pd.DataFrame, cfg: TrainConfig) -> pd.DataFrame:
    """An evaluation set (a ``path`` column) after ``data.verify_images`` / ``data.on_bad_image``, as training
    treats its sources: decoded up front and an undecodable image named, or (warn) left out and counted."""
    return check_frame_images(frame, cfg.data.verify_images, cfg.data.on_bad_image)


def evaluate_all(model, tokenizer, cfg: TrainConfig, device, figures_dir: Path | None = None) -> dict:
    """Every evaluation the config names -> metrics dict for results.json (fractions). With ``figures_dir``: its
    pictures too (retrieval_strip.png, chexpert5x200_confusion.png, chexpert5x200_retrieval_strip.png)."""
    transform = eval_transform(cfg.data.image_size, cfg.model.image.name)
    text_fn = lambda texts: embed_texts(model, tokenizer, texts, device, max_length=cfg.data.max_length)  # noqa: E731
    metrics: dict = {}
    ev = cfg.eval
    if ev.retrieval_root:
        frame = decodable(retrieval_frame(ev.retrieval_root, ev.retrieval_layout, ev.retrieval_split,
                                          ev.retrieval_image_root, ev.openi_projections), cfg)
        image_emb = embed_images(model, frame["path"].tolist(), transform, device,
                                 source=f"retrieval ({ev.retrieval_layout} {ev.retrieval_root}, split {ev.retrieval_split})")
        both = retrieval(image_emb, frame["text"].tolist(), text_fn)
        metrics["retrieval_i2t"], metrics["retrieval_t2i"] = both["i2t"], both["t2i"]
        _strip(figures_dir, "retrieval_strip.png", frame["path"].tolist(), both)
        print(f"retrieval ({ev.retrieval_layout}) on {len(frame)} images: image->text {_fmt(both['i2t'])}; "
              f"text->image {_fmt(both['t2i'])}")
    if ev.zeroshot_root and ev.zeroshot_csv:
        raise ValueError("set one of eval.zeroshot_root and eval.zeroshot_csv (both write zeroshot_* metrics)")
    if ev.zeroshot_root or ev.zeroshot_csv:
        classes = ev.zeroshot_classes
        if ev.zeroshot_csv:
            # no classes named: every column of the CSV but the image (the VinDr CSV cxrclip.prepare writes)
            classes = classes or [c for c in pd.read_csv(ev.zeroshot_csv, nrows=0).columns if c != "image"]
            paths, labels = read_classification_csv(ev.zeroshot_csv, classes,
                                                    ev.zeroshot_label_names or None, ev.zeroshot_image_root)
            kept = decodable(pd.DataFrame({"path": paths, "row": range(len(paths))}), cfg)
            paths, labels = kept["path"].tolist(), labels[kept["row"].to_numpy()]
        else:
            frame = decodable(study_frame(ev.zeroshot_root, "test" if ev.zeroshot_layout == "mimic" else "valid",
                                          ev.zeroshot_layout), cfg)
            missing = [c for c in classes if c not in frame]
            if missing:
                raise ValueError(f"zero-shot classes {missing} are not label columns of {ev.zeroshot_root}")
            paths, labels = frame["path"].tolist(), frame[classes].to_numpy()
        image_emb = embed_images(model, paths, transform, device,
                                 source=f"zero-shot ({ev.zeroshot_csv or ev.zeroshot_root})")
        table = binary_zeroshot(image_emb, labels, classes, text_fn, ev.binary_prompts)
        print("binary zero-shot (p = softmax over the [negative, positive] prompt similarities):\n"
              + render_table(table))
        metrics["zeroshot_auroc"] = table["auroc"].to_dict()
        metrics["zeroshot_f1"] = table["f1"].to_dict()
    if ev.chexpert5x200_csv:
        metrics.update(_chexpert5x200(model, cfg, transform, text_fn, device, figures_dir))
    if not metrics:
        raise ValueError("nothing to evaluate: set eval.retrieval_root, eval.zeroshot_root / eval.zeroshot_csv or "
                         "eval.chexpert5x200_csv")
    return metrics


def _strip(figures_dir: Path | None, name: str, paths: list[str], both: dict) -> None:
    if figures_dir is not None:
        path = save_retrieval_strip(figures_dir / name, paths, both["similarity"], both["texts"], both["target"])
        print(f"retrieval strip: {Path(path).resolve()}")


def _chexpert5x200(model, cfg: TrainConfig, transform, text_fn, device, figures_dir: Path | None = None) -> dict:
    """Ensemble zero-shot accuracy, and image<->text retrieval against the 'Report Impression' column if present."""
    ev = cfg.eval
    frame = pd.read_csv(ev.chexpert5x200_csv)
    prompts = load_class_prompts(ev.class_prompts) if ev.class_prompts else chexpert5x200_class_prompts()
    missing = [c for c in [*prompts, "Path"] if c not in frame]
    if missing:
        raise ValueError(f"{ev.chexpert5x200_csv}: missing column(s) {missing}")
    root = Path(ev.chexpert5x200_image_root or Path(ev.chexpert5x200_csv).parent)
    frame = decodable(frame.assign(path=eval_image_paths(frame["Path"], root, ev.chexpert5x200_csv)), cfg)
    paths = frame["path"].tolist()
    image_emb = embed_images(model, paths, transform, device, source=f"CheXpert5x200 ({ev.chexpert5x200_csv})")
    targets = frame[list(prompts)].to_numpy().argmax(1)
    scores = ensemble_scores(image_emb, prompts, text_fn)
    table = multiclass_accuracy(targets, scores, list(prompts))
    print("CheXpert5x200 zero-shot accuracy:\n" + table.to_string())
    if figures_dir is not None:
        path = save_confusion_matrix(figures_dir / "chexpert5x200_confusion.png", targets, scores, list(prompts))
        print(f"confusion matrix: {path}")
    out = {"chexpert5x200_accuracy": table.iloc[:, 0].to_dict()}
    if "Report Impression" not in frame:
        print(f"CheXpert5x200 retrieval not run: {ev.chexpert5x200_csv} has no 'Report Impression' column")
        return out
    texts = frame["Report Impression"].fillna("").astype(str).str.strip()
    keep = (texts != "").to_numpy()
    both = retrieval(image_emb[torch.tensor(keep)], texts[keep].tolist(), text_fn)
    out["chexpert5x200_retrieval_i2t"], out["chexpert5x200_retrieval_t2i"] = both["i2t"], both["t2i"]
    _strip(figures_dir, "chexpert5x200_retrieval_strip.png", [p for p, k in zip(paths, keep) if k], both)
    print(f"CheXpert5x200 retrieval on {int(keep.sum())} images: image->text {_fmt(both['i2t'])}; "
          f"text->image {_fmt(both['t2i'])}")
    return out


def _fmt(scores: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_args(parser)
    args = parser.parse_args(argv)
    loaded = load_from_args(parser, args)
    cfg = loaded.cfg
    run_dir = loaded.run_dir or create_run_dir("cxrclip", f"{cfg.name}-eval", root=cfg.output_root)
    metrics = evaluate_all(loaded.model, loaded.tokenizer(), cfg, loaded.device, figures_dir=run_dir)
    headline = ["retrieval_i2t/R@10", "zeroshot_auroc/mean"]
    write_results(run_dir, "cxrclip", cfg.name, metrics, published_key=cfg.name, notes=[f"weights: {loaded.weights}"],
                  headline=[h for h in headline if h.split("/")[0] in metrics] or None)
    report_run(run_dir, plot=False)   # released weights (eval-authors-cxrclip) get their comparison here too
    print(f"results: {Path(run_dir).absolute() / 'results.json'}; ours vs published: python -m shared.report "
          f"{run_dir} (written to {Path(run_dir).absolute() / 'report.md'})")
    return metrics


if __name__ == "__main__":
    cli_exit("python -m cxrclip.test", main)
