"""HAM's attention page: ``index.html`` with, per (test box image, box class): input, GT boxes, GT mask, mask
overlay, anomaly (positive) attention, anomaly overlay, disease attention, disease overlay
(overlay = 0.65 image + 0.35 colour; attention = the min-max normalised CAM upsampled to the input, JET colours).

Every test box image gets its rows by default (``eval.visual_max_images: 0``; N > 0 caps the page at N images, as
the demo does). The pictures are rendered at the input size and written as ``eval.visual_thumb``-px JPEG
thumbnails (256: ~15 kB each, ~8,000 of them for NIH's 880 box images), loaded lazily by the browser.

    python -m ham.visual --run runs/ham/nih_loc_fold1/20261121-2300             # -> RUN/visual/index.html
    python -m ham.visual -cfg ham/configs/nih_loc_fold1.yaml -w best.pt --out vis/
"""
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd ham && python visual.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from shared.cli import cli_exit
from shared.config import ConfigError, add_config_args
from shared.engine import make_loader, select_device

from ham.test import load_model, load_run
from ham.train import eval_sets, prepare_data

COLUMNS = ["input", "GT boxes", "GT mask", "mask overlay", "anomaly attention", "anomaly overlay",
           "disease attention", "disease overlay"]


def normalised_cam(raw: torch.Tensor, size) -> torch.Tensor:
    """(B,K,h,w) -> (B,K,H,W) in [0,1]: bilinear (align_corners=True) then min-max per map."""
    up = F.interpolate(raw.float(), size=size, mode="bilinear", align_corners=True)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    return (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))


def colorize(att: np.ndarray) -> np.ndarray:
    """[0,1] (H,W) -> RGB uint8 JET."""
    bgr = cv2.applyColorMap(np.clip(att * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(gray_rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.clip(0.65 * gray_rgb.astype(np.float32) + 0.35 * colour.astype(np.float32), 0, 255).astype(np.uint8)


def mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding rectangles (x, y, w, h) of the connected parts of a GT mask (the boxes at the input size)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    return [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)]


def render_row(image: np.ndarray, gt: np.ndarray, ano: np.ndarray, dis: np.ndarray) -> list[np.ndarray]:
    """The eight pictures of one (image, class) pair; ``image`` (H,W,3) uint8, the others (H,W) in [0,1]."""
    boxed = image.copy()
    for x, y, w, h in mask_boxes(gt):
        cv2.rectangle(boxed, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), max(1, image.shape[0] // 256))
    mask_rgb = np.repeat((gt > 0).astype(np.uint8)[..., None] * 255, 3, axis=2)
    mask_col = np.zeros_like(image)
    mask_col[gt > 0] = (255, 0, 0)
    ano_c, dis_c = colorize(ano), colorize(dis)
    return [image, boxed, mask_rgb, overlay(image, mask_col), ano_c, overlay(image, ano_c), dis_c,
            overlay(image, dis_c)]


def write_page(out_dir: Path, rows: list[dict], title: str) -> Path:
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in ["image / class"] + COLUMNS)
    body = []
    for r in rows:
        imgs = "".join(f'<td><img src="{html.escape(p)}" width="192" loading="lazy" decoding="async"></td>'
                       for p in r["files"])
        body.append(f"<tr><td>{html.escape(r['image_id'])}<br><b>{html.escape(r['class'])}</b><br>"
                    f"p={r['prob']:.3f}<br>IoU={r['iou']:.3f}</td>{imgs}</tr>")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px;text-align:center;font-size:12px}</style>"
            f"</head><body><h2>{html.escape(title)}</h2><p>{len(rows)} (image, box class) rows of "
            f"{len({r['image_id'] for r in rows})} images</p><table><tr>{cells}</tr>\n" + "\n".join(body) +
            "\n</table></body></html>\n")
    path = out_dir / "index.html"
    path.write_text(page)
    return path


def thumbnail(pic: np.ndarray, size: int) -> np.ndarray:
    """``pic`` shrunk (area interpolation) so that its longer side is at most ``size`` (0: unchanged)."""
    h, w = pic.shape[:2]
    if size <= 0 or max(h, w) <= size:
        return pic
    f = size / max(h, w)
    return cv2.resize(pic, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def visualise(model, loader, classes, device, out_dir: Path, max_images: int = 0, threshold: float = 0.999,
              title: str = "HAM attention", thumb: int = 256) -> Path:
    """Render the page; ``max_images`` > 0 caps it at that many box images (0: all of them)."""
    img_dir = out_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows, seen = [], 0
    ids = loader.dataset.ids
    for batch in loader:
        x = batch["image"].to(device)
        out = model(x, refine=True)
        size = x.shape[-2:]
        ano = normalised_cam(out.raw_ano, size).cpu().numpy()
        dis = normalised_cam(out.raw_cls, size).cpu().numpy()
        refined = out.refined_cls.cpu()
        probs = torch.sigmoid(out.logit_cls.float()).cpu().numpy()
        images = ((batch["image"].numpy().transpose(0, 2, 3, 1) * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
        for b in range(x.shape[0]):
            if 0 < max_images <= seen:
                break
            seen += 1
            image_id = str(ids[int(batch["index"][b])])
            for c in batch["has_box"][b].nonzero().flatten().tolist():
                gt = batch["masks"][b, c].numpy()
                pred = (refined[b, c] >= threshold).numpy()
                iou = float((pred & (gt > 0)).sum() / max(((pred | (gt > 0)).sum()), 1))
                pics = render_row(images[b], gt, ano[b, 0], dis[b, c])
                stem = f"{len(rows):04d}_{Path(image_id).stem}_{classes[c]}"
                files = []
                for k, pic in enumerate(pics):
                    name = f"img/{stem}_{k}.jpg"
                    cv2.imwrite(str(out_dir / name), cv2.cvtColor(thumbnail(pic, thumb), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 90])
                    files.append(name)
                rows.append({"image_id": image_id, "class": classes[c], "prob": float(probs[b, c]), "iou": iou,
                             "files": files})
        if 0 < max_images <= seen:
            break
    return write_page(out_dir, rows, title)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description="HAM attention HTML page (index.html)")
    add_config_args(parser, required=False)
    parser.add_argument("-w", "--weights", default=None)
    parser.add_argument("--run", default=None)
    parser.add_argument("--out", default=None, help="output directory (default RUN/visual)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="cap the page at N box images (default eval.visual_max_images; 0: all)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        cfg, ckpt, run_dir, config_name = load_run(args.config, args.weights, args.run, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    out_dir = Path(args.out) if args.out else (run_dir or Path(".")) / "visual"
    out_dir.mkdir(parents=True, exist_ok=True)
    classes, boxes, splits = prepare_data(cfg)
    device = select_device(args.device or cfg.engine.device)
    model = load_model(cfg, ckpt, len(classes), device)
    _, loc_set = eval_sets(cfg, splits.test, splits.test_box_ids, classes, boxes)
    if loc_set is None:
        raise SystemExit(f"{config_name}: the test split has no box images to visualise")
    loader = make_loader(loc_set, cfg.optim.eval_batch_size, shuffle=False, train=False, num_workers=0)
    max_images = cfg.eval.visual_max_images if args.max_images is None else args.max_images
    page = visualise(model, loader, classes, device, out_dir, max_images, cfg.eval.loc_threshold,
                     title=f"HAM attention — {config_name}", thumb=cfg.eval.visual_thumb)
    print(f"page: {Path(page).resolve()}")   # absolute: opens from a method folder too
    return page


if __name__ == "__main__":
    cli_exit("python -m ham.visual", main)
