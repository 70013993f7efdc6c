"""Evaluate AG-CNN: per-class AUROC of the global, local and fusion branches (paper Table I, Wang column order),
the tau sweep of Fig. 9, heatmap + box pictures, results.json for ``shared.report``.

    python -m agcnn.test --run RUN_DIR                   # RUN/config.yaml, best.pt of the last stage, results in RUN
    python -m agcnn.test -cfg agcnn/configs/nih_resnet50.yaml --weights some.pt --out DIR [--set k=v ...]

The global branch runs once per batch; each tau of ``test.taus`` (plus ``model.tau``) reuses its features for
the crop, the local branch and the fusion FC. The mean AUROC is over the 14 findings; with C = 15 the
"No Finding" AUROC is reported separately. Missing test images (``data.on_missing=warn``) are counted in the notes.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # `cd agcnn && python test.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import torch

from shared.cli import cli_exit
from shared.config import ConfigError, add_config_args, load_config
from shared.data.labels import NIH_WANG_ORDER
from shared.engine import load_checkpoint, load_model_weights, select_device, weights_from_checkpoint
from shared.metrics.classification import per_class_auroc
from shared.report import write_results

from agcnn.config import Config
from agcnn.train import METHOD, build_model, check_data_root, final_checkpoint, stage_plan
from agcnn.weights import load_seed_fusion_fc

ABBREV = ["Atel", "Card", "Effu", "Infi", "Mass", "Nodu", "Pne1", "Pne2", "Cons", "Edem", "Emph", "Fibr", "PT",
          "Hern"]


def auroc_dict(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """{finding: AUROC} in Wang order + "mean" over the 14 findings (NaN classes excluded from the mean)."""
    auc = per_class_auroc(labels[:, :14], scores[:, :14])
    out = {name: float(v) for name, v in zip(NIH_WANG_ORDER, auc)}
    out["mean"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    head = f"{'branch':<8}" + "".join(f"{a:>6}" for a in ABBREV) + f"{'mean':>7}"
    lines = [head]
    for name, d in rows.items():
        vals = "".join(f"{d[c]:6.3f}" if np.isfinite(d[c]) else f"{'nan':>6}" for c in NIH_WANG_ORDER)
        lines.append(f"{name:<8}{vals}{d['mean']:7.3f}")
    return "\n".join(lines)


@torch.no_grad()
def run_inference(model, loader, device, taus: Sequence[float], default_tau: float, keep_images: int = 0):
    """Global probs once; local + fusion probs for each tau. Returns (labels, global, {tau: (local, fusion)},
    fallbacks at the default tau, pictures [(image, heat, box, labels, global probs, dataset index)] for the first
    ``keep_images`` images)."""
    model.eval()
    taus = sorted(set(float(t) for t in taus) | {float(default_tau)})
    labels, glob = [], []
    per_tau = {t: ([], []) for t in taus}
    fallback, pictures = [], []
    for batch in loader:
        x = batch["image"].to(device)
        g = model.global_branch(x)
        glob.append(torch.sigmoid(g.logits.float()).cpu())
        labels.append(batch["labels"])
        for t in taus:
            out = model.forward_local(x, g.features, g.pooled, tau=t)
            per_tau[t][0].append(torch.sigmoid(out["local"].float()).cpu())
            per_tau[t][1].append(torch.sigmoid(out["fusion"].float()).cpu())
            if t == float(default_tau):
                fallback.append(out["fallback"].cpu())
                for i in range(min(len(x), keep_images - len(pictures))):
                    pictures.append((x[i].cpu(), out["heat"][i].cpu(), out["boxes"][i].cpu(), batch["labels"][i],
                                     glob[-1][i], int(batch["index"][i])))
    cat = lambda v: torch.cat(v).numpy()  # noqa: E731
    return (cat(labels), cat(glob), {t: (cat(a), cat(b)) for t, (a, b) in per_tau.items()},
            cat(fallback) if fallback else np.zeros(0, bool), pictures)


def true_boxes(ds, indices, root, resize: int, crop: int) -> dict[int, list[tuple]]:
    """NIH box-list boxes of the dataset images ``indices`` in the network input's pixels (after Resize(resize) and
    CenterCrop(crop)): {index: [(label, x0, y0, x1, y1)]}. Empty when the DATA folder has no box list."""
    from PIL import Image

    from shared.data.nih import BOX_LIST_NAMES, read_boxes
    if not any((Path(root) / f"{n}{gz}").is_file() for n in BOX_LIST_NAMES for gz in ("", ".gz")):
        return {}
    boxes = read_boxes(root).groupby("image_id")
    out = {}
    for i in indices:
        if ds.image_ids[i] not in boxes.groups:
            continue
        with Image.open(ds.paths[i]) as im:
            w, h = im.size
        off = (resize - crop) / 2
        out[i] = [(r.label, r.x * resize / w - off, r.y * resize / h - off, (r.x + r.w) * resize / w - off,
                   (r.y + r.h) * resize / h - off) for r in boxes.get_group(ds.image_ids[i]).itertuples()]
    return out


def save_overlays(pictures, out_dir: Path, tau: float, class_names, truth: dict | None = None) -> list[Path]:
    """One picture per image: the crop box (lime) and the true NIH boxes (red, named) on the input, the heatmap beside
    it; the title names the true findings and the model's top 3."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from shared.data.transforms import denormalize

    out_dir.mkdir(parents=True, exist_ok=True)
    truth = truth or {}
    paths = []
    for k, (img, heat, box, labels, probs, index) in enumerate(pictures):
        rgb = denormalize(img).clamp(0, 1).permute(1, 2, 0).numpy()
        fig, axes = plt.subplots(1, 2, figsize=(7, 4.2), layout="constrained")
        axes[0].imshow(rgb)
        listed = "true boxes (red)" if truth.get(index) else "no true box listed"
        axes[0].set_title(f"input: crop box (lime), {listed}", fontsize=8)
        axes[1].imshow(rgb)
        axes[1].imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[1].contour(heat.numpy() > tau, levels=[0.5], colors="white", linewidths=0.8)
        axes[1].set_title(f"max|f| heatmap, tau={tau}", fontsize=8)
        x0, y0, x1, y1 = box.tolist()
        for ax in axes:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="lime", lw=1.5))
            ax.axis("off")
        for label, bx0, by0, bx1, by1 in truth.get(index, []):
            axes[0].add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, ec="red", lw=1.2))
            axes[0].text(bx0, by0 - 2, label, color="red", fontsize=7, va="bottom")
        true = [n for n, y in zip(class_names, labels.tolist()) if y > 0] or ["No Finding"]
        top = sorted(zip(probs.tolist(), class_names), reverse=True)[:3]
        fig.suptitle(f"true: {', '.join(true)}\npredicted: " + ", ".join(f"{n} {p:.2f}" for p, n in top),
                     fontsize=8)
        path = out_dir / f"overlay_{k:02d}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_tau_sweep(sweep: dict, global_mean: float, path: Path, published: dict | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = sorted(float(t) for t in sweep["local"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(taus, [sweep["local"][f"{t:g}"] for t in taus], "o-", label="local (ours)")
    ax.plot(taus, [sweep["fusion"][f"{t:g}"] for t in taus], "s-", label="fusion (ours)")
    ax.axhline(global_mean, color="gray", ls="--", label="global (ours)")
    if published:
        for name, marker in (("local", "o"), ("fusion", "s")):
            pts = sorted((float(t), v) for t, v in published.get(name, {}).items())
            if pts:
                ax.plot(*zip(*pts), marker + ":", alpha=0.6, label=f"{name} (paper Fig. 9)")
    ax.set_xlabel("tau")
    ax.set_ylabel("mean AUROC (14 findings)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def untrained_heads(cfg: Config, weights: Path) -> list[str]:
    """Heads a checkpoint of an earlier stage has not trained yet (e.g. stage I's best.pt: local and fusion), read
    from the run layout <run>/<stage>/checkpoints/best.pt; empty for the final stage or an unknown layout."""
    plan = stage_plan(cfg)
    names = [stage.dirname for stage in plan]
    stage_dir = Path(weights).resolve().parent.parent.name
    if stage_dir not in names:
        return []
    trained = {part for stage in plan[:names.index(stage_dir) + 1] for part in stage.parts}
    return [head for head in ("global", "local", "fusion") if head not in trained]


def evaluate(cfg: Config, weights: Path, out_dir: Path, split: str | None = None) -> dict:
    from torch.utils.data import DataLoader

    from agcnn.data import datasets

    device = select_device(cfg.engine.device)
    cfg.model.pretrained = False  # weights come from the checkpoint
    cfg.model.pretrained_path = None
    model = build_model(cfg)
    ckpt = load_checkpoint(weights, map_location="cpu")
    load_model_weights(model, weights_from_checkpoint(ckpt, prefer_ema=True))
    if cfg.model.seed_fusion_fc:   # the seed repository's released fusion FC over the checkpoint's two branches
        load_seed_fusion_fc(model, cfg.model.seed_fusion_fc)
    model.to(device).eval()
    untrained = [h for h in untrained_heads(cfg, weights) if not (h == "fusion" and cfg.model.seed_fusion_fc)]
    if untrained:
        whole = final_checkpoint(Path(weights).resolve().parents[2], cfg)
        warnings.warn(f"{weights} is a checkpoint of an earlier stage: the {' and '.join(untrained)} head(s) are "
                      f"untrained and their AUROC means nothing; the whole model is {whole}", stacklevel=2)
    sets = datasets(cfg)
    split = split or cfg.test.split
    ds = sets[split]
    loader = DataLoader(ds, batch_size=cfg.test.batch_size, shuffle=False, num_workers=cfg.engine.num_workers)
    otsu = cfg.model.threshold == "otsu"  # tau is not used: no sweep
    labels, glob, per_tau, fallback, pictures = run_inference(
        model, loader, device, [] if otsu else cfg.test.taus, cfg.model.tau, cfg.test.overlays)
    tau = float(cfg.model.tau)
    local, fusion = per_tau[tau]
    rows = {"global": auroc_dict(labels, glob), "local": auroc_dict(labels, local),
            "fusion": auroc_dict(labels, fusion)}
    sweep = {"local": {f"{t:g}": auroc_dict(labels, a)["mean"] for t, (a, _) in sorted(per_tau.items())},
             "fusion": {f"{t:g}": auroc_dict(labels, b)["mean"] for t, (_, b) in sorted(per_tau.items())}}
    threshold = "Otsu threshold" if otsu else f"tau={tau:g}"
    print(f"AUROC on {split} ({len(ds)} images), {threshold}, paper column order:")
    print(format_table(rows))
    print("tau sweep: not applicable (model.threshold=otsu)" if otsu else "tau sweep (mean AUROC):  tau  local  fusion")
    for t in [] if otsu else sorted(per_tau):
        print(f"                        {t:4.2f}  {sweep['local'][f'{t:g}']:.3f}  {sweep['fusion'][f'{t:g}']:.3f}")
    metrics: dict = {"auroc": rows["fusion"], "auroc_global": rows["global"], "auroc_local": rows["local"],
                     "crop_fallback_rate": float(fallback.mean()) if len(fallback) else 0.0}
    if not otsu:
        metrics["tau_sweep"] = sweep
    if cfg.model.num_classes == 15:
        metrics["auroc_no_finding"] = {
            name: float(per_class_auroc(labels[:, 14:15], s[:, 14:15])[0])
            for name, s in (("global", glob), ("local", local), ("fusion", fusion))}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = getattr(ds, "frame", None)
    missing = int(getattr(frame, "attrs", {}).get("missing", 0)) if frame is not None else 0
    notes = [f"split={cfg.data.split}/{split}, {len(ds)} images, weights={weights}",
             f"mean AUROC over the 14 findings; auroc = fusion branch ({threshold})"]
    if cfg.model.seed_fusion_fc:
        notes.append(f"fusion FC: the seed repository's released file {cfg.model.seed_fusion_fc} (branches: {weights})")
    if untrained:
        notes.append(f"UNTRAINED {', '.join(untrained)} head(s): {weights} is an earlier stage's checkpoint")
    if missing:
        notes.append(f"{missing} images of the split were missing under {cfg.data.root} and were skipped "
                     "(data.on_missing=warn)")
    if "synthetic" in str(cfg.data.root):
        notes.append("synthetic twin data: NOT a reproduction of the paper's numbers")
    write_results(out_dir, METHOD, cfg.name, metrics, published_key=cfg.published_key, notes=notes,
                  headline=["auroc/mean", "auroc_global/mean", "auroc_local/mean"])
    np.savez_compressed(out_dir / "predictions.npz", labels=labels, global_=glob, local=local, fusion=fusion,
                        index=np.arange(len(labels)))
    truth = true_boxes(ds, [p[5] for p in pictures], cfg.data.root, cfg.data.resize, cfg.data.image_size)
    save_overlays(pictures, out_dir / "overlays", tau, ds.label_columns, truth)
    published = None
    try:
        from shared.report import load_published
        pub = load_published(Path(__file__).resolve().parent).get(cfg.published_key or "", {})
        published = {k: {t: v / pub.get("scale", 1) for t, v in d.items()}
                     for k, d in pub.get("metrics", {}).get("tau_sweep", {}).items()}
    except Exception:  # the picture is a convenience; never fail the evaluation for it
        published = None
    if not otsu:
        plot_tau_sweep(sweep, rows["global"]["mean"], out_dir / "tau_sweep.png", published)
    (out_dir / "test_summary.json").write_text(json.dumps({"rows": rows, "tau_sweep": sweep}, indent=2) + "\n")
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="run directory written by agcnn.train")
    parser.add_argument("--weights", default=None, help="checkpoint to evaluate (default: the run's final stage)")
    parser.add_argument("--out", default=None, help="where results go (default: the run directory)")
    parser.add_argument("--split", default=None, choices=["train", "val", "test"])
    args = add_config_args(parser, required=False).parse_args(argv)
    if not args.run and not args.weights:
        parser.error("give --run RUN_DIR or --weights CHECKPOINT")
    config = args.config or (Path(args.run) / "config.yaml" if args.run else None)
    if config is None:
        parser.error("give -cfg CONFIG with --weights (or --run RUN_DIR, whose config.yaml is used)")
    try:
        cfg = load_config(Config, config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    check_data_root(cfg, parser)
    weights = Path(args.weights) if args.weights else final_checkpoint(Path(args.run), cfg)
    if not weights.is_file():
        parser.error(f"checkpoint not found: {weights} (has training finished? see agcnn/README.md)")
    out = Path(args.out or args.run or weights.parent)
    metrics = evaluate(cfg, weights, out, args.split)
    print(f"results: {out.resolve() / 'results.json'}; pictures: {out.resolve() / 'overlays'}/"
          + ("" if "tau_sweep" not in metrics else f", {out.resolve() / 'tau_sweep.png'}"))
    return metrics


if __name__ == "__main__":
    cli_exit("python -m agcnn.test", main)
