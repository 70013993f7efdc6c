"""shared.metrics.localization: HAM's box masks, IoU/IoBB, streaming T(IoU)/T(IoBB) tables."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from shared.metrics.localization import (IOBB_THRESHOLDS, IOU_THRESHOLDS, LocalizationMeter, boxes_to_mask,
                                         iou_iobb, resize_mask_nearest)


def ham_fill(boxes, h, w):
    m = np.zeros((h, w), dtype=bool)
    for x, y, bw, bh in boxes:
        m[int(y):int(y + bh), int(x):int(x + bw)] = True
    return m


def test_boxes_to_mask_matches_ham_fill_and_pil_resize():
    boxes = [[100.7, 200.2, 300.5, 150.9], [600.0, 50.5, 99.99, 400.0]]
    full = boxes_to_mask(boxes, 1024, 1024)
    np.testing.assert_array_equal(full, ham_fill(boxes, 1024, 1024))
    for size in [(512, 512), (300, 700), (1024, 1024)]:
        pil = np.asarray(Image.fromarray(full.astype(np.uint8) * 255).resize(size[::-1], Image.NEAREST)) > 0
        np.testing.assert_array_equal(boxes_to_mask(boxes, 1024, 1024, out_size=size), pil)
        np.testing.assert_array_equal(resize_mask_nearest(full, size), pil)
    # ratios where (i + 0.5) * ratio and Pillow's fixed-point sampling disagree: 1024 -> 224, 1000 -> 333
    noise = np.random.default_rng(0).random((1024, 1000)) > 0.5
    for size in [(224, 224), (333, 333)]:
        pil = np.asarray(Image.fromarray(noise.astype(np.uint8) * 255).resize(size[::-1], Image.NEAREST)) > 0
        np.testing.assert_array_equal(resize_mask_nearest(noise, size), pil)
    # scale: boxes in 1024-px coordinates, image at 512
    half = [[b * 0.5 for b in box] for box in boxes]
    np.testing.assert_array_equal(boxes_to_mask(boxes, 512, 512, scale=0.5), ham_fill(half, 512, 512))
    # a box sticking out is clipped (no wrap-around); empty input is all False
    m = boxes_to_mask([-5, -5, 10, 10], 8, 8)
    assert m[:5, :5].all() and m.sum() == 25
    assert not boxes_to_mask(np.zeros((0, 4)), 4, 4).any()
    with pytest.raises(ValueError, match="boxes"):
        boxes_to_mask([[1, 2, 3]], 4, 4)


def test_iou_iobb_definitions():
    p = np.zeros((10, 10), bool)
    g = np.zeros((10, 10), bool)
    p[0:2, 0:5] = True                      # 10 px
    g[0:2, 3:10] = True                     # 14 px; overlap 4
    iou, iobb = iou_iobb(p, g)
    assert iou[0] == pytest.approx(4 / 20) and iobb[0] == pytest.approx(4 / 10)
    iou, iobb = iou_iobb(np.zeros((10, 10)), np.zeros((10, 10)))   # empty: denominators max(., 1)
    assert iou[0] == 0 and iobb[0] == 0
    with pytest.raises(ValueError, match="pred_threshold"):
        iou_iobb(np.full((4, 4), 0.7), g[:4, :4])
    iou, _ = iou_iobb(np.full((4, 4), 0.9991), np.ones((4, 4)), pred_threshold=0.999)
    assert iou[0] == 1.0
    iou, iobb = iou_iobb(torch.tensor(p), g.astype(np.uint8))          # torch and numpy mixed
    assert iou[0] == pytest.approx(4 / 20) and iobb[0] == pytest.approx(4 / 10)


def test_meter_streaming_matches_brute_force():
    rng = np.random.default_rng(0)
    names = ["Atelectasis", "Cardiomegaly", "Effusion"]
    meter = LocalizationMeter(names)
    allp, allg, allc = [], [], []
    for step in range(6):
        b = 4
        pred = rng.random((b, 32, 32)) < rng.random((b, 1, 1))
        gt = np.stack([boxes_to_mask([rng.integers(0, 20), rng.integers(0, 20), 12, 12], 32, 32) for _ in range(b)])
        cls = rng.integers(0, 2, size=b)     # class 2 never gets a pair
        if step % 2:
            meter.update(torch.tensor(cls), torch.tensor(pred), torch.tensor(gt))
        else:
            for i in range(b):                # single (H, W) pairs with an int class
                meter.update(int(cls[i]), pred[i], gt[i].astype(np.uint8))
        allp.append(pred), allg.append(gt), allc.append(cls)
    p, g, c = np.concatenate(allp), np.concatenate(allg), np.concatenate(allc)
    inter = (p & g).sum((1, 2))
    iou = inter / np.maximum((p | g).sum((1, 2)), 1)
    iobb = inter / np.maximum(p.sum((1, 2)), 1)
    t_iou, t_iobb = meter.tables()
    assert list(t_iou.columns) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    assert list(t_iobb.columns) == ["0.1", "0.25", "0.5", "0.75", "0.9"]
    assert list(t_iou.index) == names + ["mean"]
    for k in range(2):
        for t in IOU_THRESHOLDS:
            assert t_iou.loc[names[k], f"{t:g}"] == pytest.approx((iou[c == k] >= t).mean())
        for t in IOBB_THRESHOLDS:
            assert t_iobb.loc[names[k], f"{t:g}"] == pytest.approx((iobb[c == k] >= t).mean())
    assert t_iou.loc[names[2]].isna().all() and t_iou.attrs["excluded"] == [names[2]]
    np.testing.assert_allclose(t_iou.loc["mean"], t_iou.loc[names[:2]].mean())
    assert t_iou.attrs["n_pairs"] == {names[0]: int((c == 0).sum()), names[1]: int((c == 1).sum()), names[2]: 0}
    # the meter holds floats per pair, not masks
    held = sum(a.nbytes for xs in meter._iou + meter._iobb for a in xs)
    assert held == 2 * 8 * len(c)


def test_threshold_edges_are_inclusive():
    meter = LocalizationMeter(["a"])
    p = np.zeros((1, 10, 10), bool)
    g = np.zeros((1, 10, 10), bool)
    p[0, 0, :3] = True
    g[0, 0, :10] = True                       # IoU = 0.3 exactly, IoBB = 1
    meter.update(0, p, g)
    t_iou, t_iobb = meter.tables()
    assert t_iou.loc["a", "0.3"] == 1.0 and t_iou.loc["a", "0.4"] == 0.0
    assert t_iobb.loc["a", "0.9"] == 1.0
    with pytest.raises(ValueError, match="class_index"):
        meter.update([0, 1], np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool))
