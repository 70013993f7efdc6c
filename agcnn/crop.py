"""Attention-guided crop of AG-CNN (Guan et al. 2018, Sec. III-C), batched on the device.

From the global branch's last feature maps ``f`` ([B, K, h, w]) to one box per image and the crops:

1. heatmap ``H(x, y) = max_k |f_k(x, y)|`` (``stat="max"``; ``"l1"`` = sum_k |f_k|, ``"l2"`` = sqrt(sum_k f_k^2)
   are the paper's Table III ablations);
2. min-max scale each map to [0, 1];
3. resize to the input size (bilinear, half-pixel centres, as ``cv2.resize``/``F.interpolate(align_corners=False)``);
4. mask ``M = H > tau`` (tau = 0.7 in the paper) or Otsu's threshold on the 8-bit quantised map (the seed
   repository's variant);
5. keep the largest 8-connected component (ties: the component whose first pixel in raster order comes first,
   as ``scipy.ndimage.label`` + ``argmax`` would pick);
6. its bounding box, inclusive ``(x0, y0, x1, y1)`` with ``0 <= x0 <= x1 < W``, ``0 <= y0 <= y1 < H``;
7. crop that box from the image and resize it to ``out_size`` (224): ``torchvision.ops.roi_align`` (one batched
   call) or per-box crop + ``F.interpolate``.

A degenerate map (constant, all zero, NaN) or an empty mask falls back to the whole image; this is reported in
``CropInfo.fallback``, never an exception.

Step 5 runs as batched tensor ops: min-label propagation over the 8-neighbourhood plus pointer jumping (each
pixel's label is the flat index of a pixel of its component; ``lab = min(lab, lab[lab])`` halves chains), which
reaches the fixed point "every pixel carries its component's smallest index" in a few tens of steps for the blob
masks a heatmap gives. Iterations are capped; any image still changing at the cap is finished exactly by
``scipy.ndimage.label`` on the CPU (counted in ``CropInfo.cpu_fallback``), so the result is always exact.
That batched labelling is for the GPU: on a CPU tensor it is ~7x slower than ``scipy.ndimage.label`` called per
image (C code, exact), so ``labeler="auto"`` (the default) labels CPU masks with scipy and device masks with
tensor ops; ``"tensor"`` / ``"scipy"`` force one path on any device (same labels, tested).

``reference_boxes`` is the per-sample NumPy/OpenCV implementation the tests and ``benchmarks.agcnn_crop`` compare with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Stat = Literal["max", "l1", "l2"]
ThresholdMode = Literal["fixed", "otsu"]
CropMethod = Literal["roi_align", "interpolate"]
Labeler = Literal["auto", "tensor", "scipy"]

__all__ = ["heatmap", "minmax_scale", "upsample", "otsu_threshold", "largest_component", "mask_to_boxes",
           "attention_boxes", "crop_and_resize", "resolve_labeler", "AttentionCrop", "CropInfo", "reference_boxes",
           "reference_crops"]


@dataclass
class CropInfo:
    """What the crop did, per image: boxes [B, 4] (x0, y0, x1, y1 inclusive, input pixels), the full-res heatmap
    [B, H, W] in [0, 1], the kept-component mask [B, H, W], and bool flags for full-image fallbacks."""
    boxes: torch.Tensor
    heat: torch.Tensor
    mask: torch.Tensor
    fallback: torch.Tensor
    cpu_fallback: int = 0
    iterations: int = 0


# ------------------------------------------------------------------------------------------------ heatmap
def heatmap(features: torch.Tensor, stat: Stat = "max") -> torch.Tensor:
    """Channel statistic of the last conv activations: [B, K, h, w] -> [B, h, w] (float32)."""
    f = features.detach().float()
    if stat == "max":
        return f.abs().amax(dim=1)
    if stat == "l1":
        return f.abs().sum(dim=1)
    if stat == "l2":
        return f.pow(2).sum(dim=1).sqrt()
    raise ValueError(f"unknown heatmap statistic {stat!r}; expected 'max', 'l1' or 'l2'")


def minmax_scale(heat: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each map of [B, h, w] to [0, 1]; returns (scaled, degenerate) where degenerate marks constant or
    non-finite maps (scaled to all zeros)."""
    flat = heat.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    flat = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    degenerate = (span.squeeze(1) <= eps) | ~finite
    scaled = torch.where(degenerate[:, None], torch.zeros_like(flat), (flat - lo) / span.clamp_min(eps))
    return scaled.view_as(heat), degenerate


def upsample(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize [B, h, w] -> [B, H, W] with half-pixel centres (matches cv2.resize INTER_LINEAR)."""
    if tuple(heat.shape[-2:]) == tuple(size):
        return heat
    return F.interpolate(heat[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def otsu_threshold(heat: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-image Otsu threshold of maps in [0, 1], batched, on the 8-bit quantised map q = uint8(255 * heat)
    (the way ``cv2.threshold(..., THRESH_OTSU)`` sees it). Returns t [B] in quantised units: mask = q > t."""
    b = heat.shape[0]
    q = quantise(heat).flatten(1)
    hist = torch.zeros(b, bins, dtype=torch.float64, device=heat.device)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
    p = hist / hist.sum(dim=1, keepdim=True)
    levels = torch.arange(bins, dtype=torch.float64, device=heat.device)
    omega = p.cumsum(dim=1)
    mu = (p * levels).cumsum(dim=1)
    mu_t = mu[:, -1:]
    denom = omega * (1.0 - omega)
    sigma = torch.where(denom > 1e-12, (mu_t * omega - mu) ** 2 / denom.clamp_min(1e-12), torch.zeros_like(denom))
    # cv2 keeps the first maximum (strict '>' while scanning upwards); argmax returns the first maximum too.
    # Compare with a relative tolerance so float noise does not move the tie-break.
    best = sigma.amax(dim=1, keepdim=True)
    first = (sigma >= best * (1 - 1e-12)).to(torch.uint8).argmax(dim=1)
    return first


def quantise(heat: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] floats to 0..255 int64 as ``np.uint8(heat * 255)`` does (truncation)."""
    return (heat.clamp(0, 1) * 255).to(torch.int64)


# --------------------------------------------------------------------------------- connected components
def _union_find(n_nodes: int, p: torch.Tensor, q: torch.Tensor, max_rounds: int
                ) -> tuple[torch.Tensor, bool, int]:
    """Connected components of the graph with edges (p[i], q[i]) over nodes 0..n_nodes-1, batched tensor ops.

    Hook-and-compress: every round, the root of each edge's larger-labelled end is hooked onto the smaller root
    (``scatter_reduce`` amin, so no cycles: pointers only decrease), then pointer jumping flattens every tree.
    Every root with a foreign neighbour hooks or is hooked, so the number of roots of a component at least
    halves per round: O(log n) rounds. Edges whose ends share a root are dropped for good.
    Returns (root of every node = the smallest node index of its component, converged, rounds).
    """
    parent = torch.arange(n_nodes, device=p.device, dtype=torch.int64)
    rounds = 0
    while True:
        lp, lq = parent[p], parent[q]
        keep = lp != lq
        if not bool(keep.any()):
            return parent, True, rounds
        if rounds >= max_rounds:
            return parent, False, rounds
        rounds += 1
        p, q, lp, lq = p[keep], q[keep], lp[keep], lq[keep]
        parent.scatter_reduce_(0, torch.maximum(lp, lq), torch.minimum(lp, lq), reduce="amin")
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand


def _edges(e: torch.Tensor, offset: tuple[int, int], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global node ids (b * h * w + y * w + x) of the edges marked in ``e`` [B, h', w'] between the node at the
    mask position (+ the crop origin of ``e``) and the node displaced by ``offset`` (dy, dx)."""
    h, w = shape
    b, y, x = torch.nonzero(e, as_tuple=True)
    (oy, ox), (dy, dx) = offset
    a = b * (h * w) + (y + oy) * w + (x + ox)
    return a, a + dy * w + dx


def _block_graph(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """8-connectivity on 2x2 blocks: all foreground pixels of a 2x2 block touch each other in 8-connectivity, so
    a block is one node, and two neighbouring blocks are joined when foreground pixels of theirs touch (a 4x
    smaller graph: the idea of block-based CCL). Returns (foreground blocks [B, hb, wb], p, q, (hb, wb))."""
    b, h, w = mask.shape
    hp, wp = h + h % 2, w + w % 2
    m = F.pad(mask, (0, wp - w, 0, hp - h)) if (hp, wp) != (h, w) else mask
    tl, tr, bl, br = m[:, 0::2, 0::2], m[:, 0::2, 1::2], m[:, 1::2, 0::2], m[:, 1::2, 1::2]
    fg = tl | tr | bl | br
    shape = tuple(fg.shape[1:])
    pairs = [
        _edges((tr | br)[:, :, :-1] & (tl | bl)[:, :, 1:], ((0, 0), (0, 1)), shape),      # (i, j) - (i, j+1)
        _edges((bl | br)[:, :-1, :] & (tl | tr)[:, 1:, :], ((0, 0), (1, 0)), shape),      # (i, j) - (i+1, j)
        _edges(br[:, :-1, :-1] & tl[:, 1:, 1:], ((0, 0), (1, 1)), shape),                # (i, j) - (i+1, j+1)
        _edges(bl[:, :-1, 1:] & tr[:, 1:, :-1], ((0, 1), (1, -1)), shape),               # (i, j+1) - (i+1, j)
    ]
    p = torch.cat([a for a, _ in pairs])
    q = torch.cat([c for _, c in pairs])
    return fg, p, q, shape


def _pixel_graph(mask: torch.Tensor, connectivity: int):
    b, h, w = mask.shape
    pairs = [_edges(mask[:, :, :-1] & mask[:, :, 1:], ((0, 0), (0, 1)), (h, w)),
             _edges(mask[:, :-1, :] & mask[:, 1:, :], ((0, 0), (1, 0)), (h, w))]
    if connectivity == 8:
        pairs += [_edges(mask[:, :-1, :-1] & mask[:, 1:, 1:], ((0, 0), (1, 1)), (h, w)),
                  _edges(mask[:, :-1, 1:] & mask[:, 1:, :-1], ((0, 1), (1, -1)), (h, w))]
    return torch.cat([a for a, _ in pairs]), torch.cat([c for _, c in pairs])


def label_components(mask: torch.Tensor, connectivity: int = 8, max_iters: int | None = None,
                     blocks: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Label the connected components of a batch of masks [B, H, W] with batched tensor ops (no per-image loop).

    Returns (labels [B, H*W] int64: flat index of the component's first pixel in raster order, H*W for
    background; converged [B] bool; rounds of union-find). ``max_iters`` caps the rounds (default 64: O(log)
    rounds suffice); if the cap is hit every image is reported unconverged and ``largest_component`` redoes them
    with scipy. ``blocks``: 8-connectivity on 2x2 blocks (default) or on pixels.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    b, h, w = mask.shape
    n = h * w
    max_iters = 64 if max_iters is None else max_iters
    mask = mask.bool()
    fgp = mask.reshape(b, n)
    dev = mask.device
    use_blocks = connectivity == 8 and blocks
    if use_blocks:
        fg, p, q, (hb, wb) = _block_graph(mask)
        nodes = torch.nonzero(fg.reshape(-1)).flatten()   # foreground blocks, ascending global id
        n_nodes = b * hb * wb
    else:
        p, q = _pixel_graph(mask, connectivity)
        nodes = torch.nonzero(fgp.reshape(-1)).flatten()
        n_nodes = b * n
    # union-find over the foreground nodes only (compact ids keep the global order, so a root is still the
    # component's smallest node): ~8x fewer nodes than the whole grid for a heat-map blob
    compact = torch.full((n_nodes,), -1, dtype=torch.int64, device=dev)
    compact[nodes] = torch.arange(len(nodes), device=dev)
    root, done, rounds = _union_find(len(nodes), compact[p], compact[q], max_iters)
    pix = torch.nonzero(fgp.reshape(-1)).flatten()     # foreground pixels: b * n + position
    img, pos = pix // n, pix % n
    node_of_pix = img * (hb * wb) + (pos // w // 2) * wb + (pos % w) // 2 if use_blocks else pix
    pix_root = root[compact[node_of_pix]]
    first = torch.full((len(nodes),), n, device=dev, dtype=torch.int64)
    first.scatter_reduce_(0, pix_root, pos, reduce="amin")  # the component's first pixel in raster order
    labels = torch.full((b * n,), n, device=dev, dtype=torch.int64)
    labels[pix] = first[pix_root]
    labels = labels.view(b, n)
    return labels, torch.full((b,), bool(done), device=mask.device), rounds


def _scipy_labels(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Exact per-image labels in the same convention (flat index of the first pixel, H*W for background)."""
    from scipy import ndimage

    h, w = mask.shape
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    lab, count = ndimage.label(mask, structure=structure)
    out = np.full(h * w, h * w, dtype=np.int64)
    flat = lab.ravel()
    if count:
        first = np.full(count + 1, h * w, dtype=np.int64)
        fg = np.nonzero(flat)[0]
        np.minimum.at(first, flat[fg], fg)
        out[fg] = first[flat[fg]]
    return out


def resolve_labeler(labeler: Labeler, device: torch.device) -> Literal["tensor", "scipy"]:
    """``auto``: scipy for a CPU tensor (faster there), the batched tensor ops on any other device."""
    if labeler == "auto":
        return "scipy" if torch.device(device).type == "cpu" else "tensor"
    if labeler not in ("tensor", "scipy"):
        raise ValueError(f"unknown labeler {labeler!r}; expected 'auto', 'tensor' or 'scipy'")
    return labeler


def _largest_component_scipy(mask: torch.Tensor, connectivity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``scipy.ndimage.label`` (labels in raster order of first pixel, so ``argmax`` over the sizes
    breaks ties as the tensor path does). Returns (kept [B, H, W] bool, size [B]) on ``mask``'s device."""
    from scipy import ndimage

    m = mask.detach().to("cpu", torch.bool).numpy()
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    kept = np.zeros_like(m)
    size = np.zeros(len(m), dtype=np.int64)
    for i, mi in enumerate(m):
        lab, count = ndimage.label(mi, structure=structure)
        if count:
            sizes = np.bincount(lab.ravel(), minlength=count + 1)
            sizes[0] = 0
            best = int(sizes.argmax())
            kept[i] = lab == best
            size[i] = sizes[best]
    return torch.from_numpy(kept).to(mask.device), torch.from_numpy(size).to(mask.device)


def largest_component(mask: torch.Tensor, connectivity: int = 8, max_iters: int | None = None,
                      labeler: Labeler = "auto") -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Keep the largest connected component of each mask [B, H, W].

    ``labeler``: ``"tensor"`` = the batched tensor labelling (``max_iters`` caps it; unconverged images are
    redone with scipy), ``"scipy"`` = ``scipy.ndimage.label`` per image on the CPU, ``"auto"`` = scipy for a CPU
    tensor, tensor ops otherwise. Returns (kept mask [B, H, W] bool, component size [B] (0 for an empty mask),
    number of images the tensor path had to finish with scipy (0 on the scipy path), iterations of the batched
    labelling (0 on the scipy path)).
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if resolve_labeler(labeler, mask.device) == "scipy":
        kept, size = _largest_component_scipy(mask, connectivity)
        return kept, size, 0, 0
    b, h, w = mask.shape
    n = h * w
    lab, converged, iters = label_components(mask, connectivity, max_iters)
    n_cpu = int((~converged).sum())
    if n_cpu:
        for i in torch.nonzero(~converged).flatten().tolist():
            exact = _scipy_labels(mask[i].cpu().numpy().astype(bool), connectivity)
            lab[i] = torch.from_numpy(exact).to(lab.device)
    counts = torch.zeros(b, n + 1, dtype=torch.int64, device=mask.device)
    counts.scatter_add_(1, lab, torch.ones_like(lab))
    counts[:, n] = 0  # background
    size, best = counts.max(dim=1)  # first maximum = smallest label = earliest component in raster order
    kept = (lab == best[:, None]) & (size[:, None] > 0)
    return kept.view(b, h, w), size, n_cpu, iters


def mask_to_boxes(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive boxes (x0, y0, x1, y1) of masks [B, H, W]; an empty mask gives the full image and empty=True."""
    b, h, w = mask.shape
    rows = mask.any(dim=2)
    cols = mask.any(dim=1)
    empty = ~rows.any(dim=1)
    ys = torch.arange(h, device=mask.device)
    xs = torch.arange(w, device=mask.device)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    full = torch.tensor([0, 0, w - 1, h - 1], device=mask.device, dtype=boxes.dtype)
    boxes = torch.where(empty[:, None], full, boxes)
    return boxes, empty


# ------------------------------------------------------------------------------------------- the pipeline
@torch.no_grad()
def attention_boxes(features: torch.Tensor, size: tuple[int, int] | Sequence[int], tau: float = 0.7,
                    stat: Stat = "max", threshold: ThresholdMode = "fixed", connectivity: int = 8,
                    max_iters: int | None = None, labeler: Labeler = "auto") -> CropInfo:
    """Boxes of the attention crop from feature maps [B, K, h, w] for inputs of ``size`` (H, W). ``labeler``
    chooses the connected-component labelling (see ``largest_component``; same result either way)."""
    size = (int(size[0]), int(size[1]))
    heat, degenerate = minmax_scale(heatmap(features, stat))
    heat = upsample(heat, size)
    if threshold == "fixed":
        mask = heat > tau
    elif threshold == "otsu":
        t = otsu_threshold(heat)
        mask = quantise(heat) > t[:, None, None]
    else:
        raise ValueError(f"unknown threshold mode {threshold!r}; expected 'fixed' or 'otsu'")
    mask &= ~degenerate[:, None, None]
    kept, _, n_cpu, iters = largest_component(mask, connectivity, max_iters, labeler)
    boxes, empty = mask_to_boxes(kept)
    return CropInfo(boxes=boxes, heat=heat, mask=kept, fallback=empty | degenerate, cpu_fallback=n_cpu,
                    iterations=iters)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, out_size: int | tuple[int, int] = 224,
                    method: CropMethod = "roi_align", box_scale: float | tuple[float, float] = 1.0) -> torch.Tensor:
    """Crop inclusive pixel boxes [B, 4] (x0, y0, x1, y1) from images [B, C, H, W] and resize to ``out_size``.

    ``box_scale`` (sx, sy) maps box pixels to image pixels when the image is not the one the boxes were
    computed on (e.g. a higher-resolution source). ``roi_align`` samples the box's continuous extent
    [x0, x1 + 1) with half-pixel centres, exactly like ``F.interpolate(crop, align_corners=False)`` inside the
    box (it reads neighbouring pixels instead of replicating the crop's edge at the border).
    """
    out_hw = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    sx, sy = (box_scale, box_scale) if isinstance(box_scale, (int, float)) else box_scale
    b = images.shape[0]
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must be [{b}, 4], got {list(boxes.shape)}")
    boxes = boxes.to(images.device)
    if method == "roi_align":
        from torchvision.ops import roi_align

        bf = boxes.to(images.dtype if images.is_floating_point() else torch.float32)
        rois = torch.stack([torch.arange(b, device=images.device, dtype=bf.dtype),
                            bf[:, 0] * sx, bf[:, 1] * sy, (bf[:, 2] + 1) * sx, (bf[:, 3] + 1) * sy], dim=1)
        return roi_align(images, rois, output_size=out_hw, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if method == "interpolate":
        out = []
        h, w = images.shape[-2:]
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            xa, xb = int(round(x0 * sx)), min(w, max(int(round((x1 + 1) * sx)), int(round(x0 * sx)) + 1))
            ya, yb = int(round(y0 * sy)), min(h, max(int(round((y1 + 1) * sy)), int(round(y0 * sy)) + 1))
            crop = images[i:i + 1, :, ya:yb, xa:xb]
            out.append(F.interpolate(crop, size=out_hw, mode="bilinear", align_corners=False))
        return torch.cat(out) if out else images.new_zeros((0, images.shape[1], *out_hw))
    raise ValueError(f"unknown crop method {method!r}; expected 'roi_align' or 'interpolate'")


class AttentionCrop(torch.nn.Module):
    """The whole mask-inference step as a parameter-free module: (images, features) -> (crops, CropInfo)."""

    def __init__(self, tau: float = 0.7, stat: Stat = "max", threshold: ThresholdMode = "fixed",
                 out_size: int = 224, method: CropMethod = "roi_align", connectivity: int = 8,
                 max_iters: int | None = None, labeler: Labeler = "auto"):
        super().__init__()
        resolve_labeler(labeler, torch.device("cpu"))  # reject a bad name now, not at the first forward
        self.tau, self.stat, self.threshold = tau, stat, threshold
        self.out_size, self.method = out_size, method
        self.connectivity, self.max_iters, self.labeler = connectivity, max_iters, labeler

    def forward(self, images: torch.Tensor, features: torch.Tensor, source: torch.Tensor | None = None,
                tau: float | None = None) -> tuple[torch.Tensor, CropInfo]:
        info = attention_boxes(features, images.shape[-2:], self.tau if tau is None else tau, self.stat,
                               self.threshold, self.connectivity, self.max_iters, self.labeler)
        src = images if source is None else source
        scale = (src.shape[-1] / images.shape[-1], src.shape[-2] / images.shape[-2])
        with torch.no_grad():
            crops = crop_and_resize(src.detach(), info.boxes, self.out_size, self.method, scale)
        return crops, info

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, stat={self.stat}, threshold={self.threshold}, out_size={self.out_size}, "
                f"method={self.method}, labeler={self.labeler}")


# ----------------------------------------------------------------------- reference (per sample, NumPy/cv2)
def reference_boxes(features: np.ndarray, size: tuple[int, int], tau: float = 0.7, stat: Stat = "max",
                    threshold: ThresholdMode = "fixed") -> np.ndarray:
    """Per-sample NumPy/OpenCV implementation of ``attention_boxes`` (the test oracle and benchmark baseline).
    features: [B, K, h, w] array; returns int64 boxes [B, 4] (x0, y0, x1, y1 inclusive)."""
    import cv2

    h_out, w_out = size
    boxes = np.zeros((len(features), 4), dtype=np.int64)
    for i, f in enumerate(features):
        f = np.abs(f.astype(np.float32))
        heat = f.max(0) if stat == "max" else f.sum(0) if stat == "l1" else np.sqrt((f ** 2).sum(0))
        lo, hi = float(heat.min()), float(heat.max())
        if not np.isfinite(heat).all() or hi - lo <= 1e-12:
            boxes[i] = (0, 0, w_out - 1, h_out - 1)
            continue
        heat = ((heat - lo) / (hi - lo)).astype(np.float32)
        heat = cv2.resize(heat, (w_out, h_out), interpolation=cv2.INTER_LINEAR)
        if threshold == "fixed":
            mask = (heat > tau).astype(np.uint8)
        else:
            q = (np.clip(heat, 0, 1) * 255).astype(np.uint8)
            t, _ = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            mask = (q > t).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            boxes[i] = (0, 0, w_out - 1, h_out - 1)
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = stats[k, :4]
        boxes[i] = (x, y, x + w - 1, y + h - 1)
    return boxes


def reference_crops(images: np.ndarray, boxes: np.ndarray, out_size: int = 224) -> np.ndarray:
    """Per-sample crop + cv2.resize of [B, C, H, W] float images (the seed repository's loop, with the channel
    axis moved by transposing, not reshaping). Returns [B, C, out, out] float32."""
    import cv2

    out = np.empty((len(images), images.shape[1], out_size, out_size), dtype=np.float32)
    for i, (img, (x0, y0, x1, y1)) in enumerate(zip(images, boxes)):
        hwc = np.ascontiguousarray(img.transpose(1, 2, 0)[y0:y1 + 1, x0:x1 + 1])
        res = cv2.resize(hwc, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
        out[i] = res.reshape(out_size, out_size, -1).transpose(2, 0, 1)
    return out
