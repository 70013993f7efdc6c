"""HAM's losses (the spec's section 2), vectorised over the batch and the classes.

    total = 0.01 ano + 1 cls + 0.5 ex_cls + 0.001 bound + 0.001 union

Notation: y (B,C) disease labels, y_ano = max_c y (B,), raw CAMs (B,*,h,w) unnormalised (ReLU), refined CAMs
(B,*,H,W) in (0,1), M (B,C,H,W) box masks, flag (B,) = 1 for box-supervised images, bbox_tag (B,C) = classes with a
box (for images without boxes the label vector; it only matters where flag = 1).
T(A) = sigmoid(100 (A - 0.75)) on the raw CAMs.

Also here: the optional dense-CRF refinement of a box mask (Using_CRF of the original; needs ``pydensecrf2``,
imported only when called).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-5


@dataclass
class LossWeights:
    ano: float = 0.01
    cls: float = 1.0
    ex_cls: float = 0.5
    bound: float = 0.001
    union: float = 0.001
    cam_loss_sigma: float = 0.75   # threshold of T(A)
    cam_loss_w: float = 100.0      # slope of T(A)


def soft_threshold(a: torch.Tensor, sigma: float = 0.75, w: float = 100.0) -> torch.Tensor:
    """T(A) = sigmoid(w (A - sigma))."""
    return torch.sigmoid(w * (a - sigma))


def anomaly_target(labels: torch.Tensor) -> torch.Tensor:
    """y_ano = max over the disease labels, (B,C) -> (B,1)."""
    return labels.amax(dim=1, keepdim=True)


@dataclass
class BatchCounts:
    """The label-derived denominators of every loss term, counted over the WHOLE effective batch.

    Each loss normalises by these counts instead of the counts of the rows it is given, so the loss of a chunk of
    the batch is that chunk's exact share of the full-batch loss: the shares of all chunks sum to the full-batch
    value and their gradients to the full-batch gradient (``ham.train`` micro-batching). ``ex_cls`` is a ratio
    whose denominator depends on the predictions, so its share is exact only when every flagged image of a class
    sits in one chunk (``ham.train`` puts all flagged images in one chunk)."""
    n_images: float                 # images in the batch
    n_pos: torch.Tensor             # (C,) positives per class
    n_pos_classes: float            # classes with a positive
    n_abnormal: float               # images with y_ano = 1
    n_ex_classes: float             # classes with a flagged, box-tagged image (ex_cls)

    @staticmethod
    def of(labels: torch.Tensor, flag: torch.Tensor | None = None,
           bbox_tag: torch.Tensor | None = None) -> "BatchCounts":
        y = labels.detach().float()
        n_pos = (y > 0).float().sum(0)
        if flag is None:
            n_ex = 0.0
        else:
            tags = y if bbox_tag is None else bbox_tag.detach().float()
            n_ex = float(((flag.detach().reshape(-1, 1) > 0) & (tags > 0)).any(0).sum())
        return BatchCounts(float(y.shape[0]), n_pos, float((n_pos > 0).sum()),
                           float((anomaly_target(y) > 0).sum()), n_ex)


def ano_loss(logit_ano: torch.Tensor, labels: torch.Tensor, n_images: float | None = None) -> torch.Tensor:
    """BCE of sigmoid(logit_ano) against y_ano (computed from logits: same value, numerically stable), summed and
    divided by ``n_images`` (default: the rows given, i.e. the mean)."""
    bce = F.binary_cross_entropy_with_logits(logit_ano.float(), anomaly_target(labels).float(), reduction="sum")
    return bce / (logit_ano.shape[0] if n_images is None else n_images)


def cls_loss(logit_cls: torch.Tensor, labels: torch.Tensor, n_images: float | None = None) -> torch.Tensor:
    """BCE averaged over the batch (``n_images``, default the rows given) and the C sigmoids."""
    bce = F.binary_cross_entropy_with_logits(logit_cls.float(), labels.float(), reduction="sum")
    return bce / ((logit_cls.shape[0] if n_images is None else n_images) * logit_cls.shape[1])


def _mean_where(values: torch.Tensor, present: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``present`` (or their sum over ``count`` entries counted
    elsewhere); 0 (with a graph) when none."""
    present = present.to(values.dtype)
    den = present.sum() if count is None else torch.as_tensor(float(count), dtype=values.dtype)
    return (values * present).sum() / den.clamp_min(1.0)


def ex_cls_loss(refined_cls: torch.Tensor, masks: torch.Tensor, flag: torch.Tensor,
                bbox_tag: torch.Tensor, n_classes: float | None = None) -> torch.Tensor:
    """Box supervision. For class c over the images with flag = 1 and bbox_tag_c = 1:
    sum_pixels (refined_c - M_c)^2 / sum(sum refined_c + sum M_c); mean over the classes present (``n_classes``:
    their number in the whole batch when these rows are a chunk of it); 0 if none."""
    sel = (flag.reshape(-1, 1) > 0) & (bbox_tag > 0)                          # (B,C)
    r, m = refined_cls.float(), masks.float()
    sq = ((r - m) ** 2).sum(dim=(2, 3))                                         # (B,C)
    tot = r.sum(dim=(2, 3)) + m.sum(dim=(2, 3))
    self_ = sel.float()
    num, den = (sq * self_).sum(0), (tot * self_).sum(0)                        # (C,)
    present = sel.any(0)
    per_class = num / torch.where(present, den.clamp_min(EPS), torch.ones_like(den))
    return _mean_where(per_class, present, n_classes)


def bound_loss(raw_cls: torch.Tensor, raw_ano: torch.Tensor, labels: torch.Tensor,
               sigma: float = 0.75, w: float = 100.0, counts: BatchCounts | None = None) -> torch.Tensor:
    """Disease attention inside positive attention. For positives of class c, H_c = raw_c y_c, H_a = raw_ano y_ano:
    [sum H_c - sum min(H_c, H_a) T(H_c)] / max(sum H_c, 1e-5); mean over the positives of the class, then over
    the classes with a positive (``counts``: those of the whole batch when these rows are a chunk of it)."""
    y = labels.float()
    h_c = raw_cls.float() * y[:, :, None, None]                                 # (B,C,h,w)
    h_a = raw_ano.float() * anomaly_target(y)[:, :, None, None]                 # (B,1,h,w)
    inside = (torch.minimum(h_c, h_a) * soft_threshold(h_c, sigma, w)).sum(dim=(2, 3))
    s_c = h_c.sum(dim=(2, 3))
    per_pair = (s_c - inside) / s_c.clamp_min(EPS)                              # (B,C)
    pos = y > 0
    n_pos = pos.float().sum(0) if counts is None else counts.n_pos.to(per_pair.device, per_pair.dtype)
    per_class = (per_pair * pos.float()).sum(0) / n_pos.clamp_min(1.0)
    return _mean_where(per_class, n_pos > 0, None if counts is None else counts.n_pos_classes)


def _union_parts(raw_cls, raw_ano, labels):
    y = labels.float()
    y_ano = anomaly_target(y)
    u = (raw_cls.float() * y[:, :, None, None]).amax(dim=1, keepdim=True)      # (B,1,h,w)
    h_a = raw_ano.float() * y_ano[:, :, None, None]
    return u, h_a, y_ano.squeeze(1) > 0


def union_loss_train(raw_cls: torch.Tensor, raw_ano: torch.Tensor, labels: torch.Tensor,
                     sigma: float = 0.75, w: float = 100.0, counts: BatchCounts | None = None) -> torch.Tensor:
    """Union as TRAINED by the original: U = max_c H_c;
    [sum H_a - sum min(U, H_a) T(H_a)] / max(sum H_a, 1e-5), mean over abnormal images (of the whole batch with
    ``counts``)."""
    u, h_a, abnormal = _union_parts(raw_cls, raw_ano, labels)
    s_a = h_a.sum(dim=(1, 2, 3))
    inside = (torch.minimum(u, h_a) * soft_threshold(h_a, sigma, w)).sum(dim=(1, 2, 3))
    return _mean_where((s_a - inside) / s_a.clamp_min(EPS), abnormal, None if counts is None else counts.n_abnormal)


def union_loss_eval(raw_cls: torch.Tensor, raw_ano: torch.Tensor, labels: torch.Tensor,
                    sigma: float = 0.75, w: float = 100.0, counts: BatchCounts | None = None) -> torch.Tensor:
    """Union as REPORTED by the original at validation/test (symmetric; a different formula from training):
    [sum(H_a + U) - 2 sum min(U, H_a) T(U) T(H_a)] / max(sum(H_a + U), 1e-5), mean over abnormal images."""
    u, h_a, abnormal = _union_parts(raw_cls, raw_ano, labels)
    tot = (h_a + u).sum(dim=(1, 2, 3))
    inter = (torch.minimum(u, h_a) * soft_threshold(u, sigma, w) * soft_threshold(h_a, sigma, w)).sum(dim=(1, 2, 3))
    return _mean_where((tot - 2 * inter) / tot.clamp_min(EPS), abnormal, None if counts is None else counts.n_abnormal)


def ham_losses(out, labels: torch.Tensor, masks: torch.Tensor | None = None, flag: torch.Tensor | None = None,
               bbox_tag: torch.Tensor | None = None, weights: LossWeights | None = None,
               union: str = "train", refine=None,
               counts: BatchCounts | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """All five terms and the weighted total from a ``HAMOutput``.

    ``counts`` (:class:`BatchCounts` of the whole effective batch) when these rows are one chunk of it: every term
    is then this chunk's share of the full-batch term (default: the counts of the rows given).

    ``masks``/``flag``/``bbox_tag`` may be None (no box supervision in the batch: ex_cls = 0); ex_cls is computed
    on the flagged rows only. When ``out.refined_cls`` is None (forward with ``refine=False``), ``refine(raw)``
    makes the refined maps of the flagged rows only (saves the (B,C,H,W) maps of the others).
    ``union`` = "train" or "eval" picks the formula."""
    wts = weights or LossWeights()
    logit_ano, logit_cls, _, refined_cls, raw_ano, raw_cls = out
    n = None if counts is None else counts.n_images
    parts = {"ano": ano_loss(logit_ano, labels, n), "cls": cls_loss(logit_cls, labels, n)}
    sel = (flag > 0) if flag is not None else None
    if masks is None or sel is None or not bool(sel.any()):
        parts["ex_cls"] = raw_cls.sum() * 0.0
    else:
        tags = labels if bbox_tag is None else bbox_tag
        refined = refined_cls[sel] if refined_cls is not None else refine(raw_cls[sel])
        parts["ex_cls"] = ex_cls_loss(refined, masks[sel], flag[sel], tags[sel],
                                      None if counts is None else counts.n_ex_classes)
    parts["bound"] = bound_loss(raw_cls, raw_ano, labels, wts.cam_loss_sigma, wts.cam_loss_w, counts)
    union_fn = {"train": union_loss_train, "eval": union_loss_eval}[union]
    parts["union"] = union_fn(raw_cls, raw_ano, labels, wts.cam_loss_sigma, wts.cam_loss_w, counts)
    total = sum(getattr(wts, k) * v for k, v in parts.items())
    parts["total"] = total
    return total, parts


# ------------------------------------------------------------------------------------------ dense CRF
# (upper bound of the class's mean min(w, h) in original pixels, (sxy, srgb))
CRF_TABLE = [(45, (5, 2)), (70, (12, 5)), (140, (15, 6)), (210, (25, 11)), (380, (50, 13)), (float("inf"), (110, 26))]
CRF_GT_PROB, CRF_COMPAT, CRF_ITERS = 0.7, 10, 5


def crf_params(mean_min_side: float) -> tuple[int, int]:
    """(sxy, srgb) of the bilateral kernel for a class whose boxes have this mean min(w, h) (1024-px units)."""
    for bound, params in CRF_TABLE:
        if mean_min_side < bound:
            return params
    raise AssertionError("unreachable")


def image_class_crf_params(boxes: dict[str, dict[str, list]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per image and class (as the original): the (sxy, srgb) from min(mean w, mean h) of that class's boxes in
    that image, in a BBoxes.json mapping (xywh) -> {image: {class: (sxy, srgb)}}."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for image, per_image in boxes.items():
        for cls, bxs in per_image.items():
            b = np.asarray(bxs, np.float64).reshape(-1, 4)
            if len(b):
                out.setdefault(image, {})[cls] = crf_params(float(min(b[:, 2].mean(), b[:, 3].mean())))
    return out


def class_crf_params(boxes: dict[str, dict[str, list]]) -> dict[str, tuple[int, int]]:
    """Per class: the (sxy, srgb) from the mean min(w, h) over all its boxes in a BBoxes.json mapping (xywh).
    (A dataset-level summary; training uses :func:`image_class_crf_params`, per image and class.)"""
    sides: dict[str, list[float]] = {}
    for per_image in boxes.values():
        for cls, bxs in per_image.items():
            sides.setdefault(cls, []).extend(min(b[2], b[3]) for b in bxs)
    return {cls: crf_params(float(np.mean(v))) for cls, v in sides.items() if v}


def crf_refine_mask(image_rgb: np.ndarray, mask: np.ndarray, sxy: float, srgb: float) -> np.ndarray:
    """Dense-CRF refinement of a box mask: DenseCRF2D with 2 labels, unary_from_labels(gt_prob=0.7), a bilateral
    kernel (compat 10), 5 iterations; the result is ANDed with the box. ``image_rgb`` (H,W,3) uint8, ``mask`` (H,W)
    {0,1}. Needs the optional package ``pydensecrf2`` (``pip install 'cxr-repro[crf]'``)."""
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_labels
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise ImportError("use_crf: true needs pydensecrf2 (pip install 'cxr-repro[crf]' or pip install "
                          "pydensecrf2)") from err
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if not mask.any():
        return mask
    h, w = mask.shape
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary_from_labels(mask, 2, gt_prob=CRF_GT_PROB, zero_unsure=False))
    # a writable C-contiguous copy: pydensecrf rejects read-only buffers (np.asarray of a PIL image is one)
    rgb = np.array(image_rgb, dtype=np.uint8, order="C")
    crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=rgb, compat=CRF_COMPAT)
    q = np.array(crf.inference(CRF_ITERS)).reshape(2, h, w)
    return (q.argmax(0).astype(np.uint8) & mask)
