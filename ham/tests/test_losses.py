"""HAM's losses on hand-made maps (the spec's section 2)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ham.losses import (CRF_TABLE, LossWeights, ano_loss, bound_loss, class_crf_params, cls_loss, crf_params,
                        image_class_crf_params,
                        crf_refine_mask, ex_cls_loss, ham_losses, soft_threshold, union_loss_eval, union_loss_train)
from ham.model import HAMOutput


def blob(h, w, y0, y1, x0, x1, value=2.0):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = value
    return m


def test_ano_and_cls_are_bce():
    logits = torch.tensor([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(cls_loss(logits, labels), F.binary_cross_entropy(torch.sigmoid(logits), labels))
    la = torch.tensor([[1.2], [-0.4]])
    ref = F.binary_cross_entropy(torch.sigmoid(la), torch.tensor([[1.0], [0.0]]))  # y_ano = max over labels
    assert torch.allclose(ano_loss(la, labels), ref)


def test_bound_zero_when_disease_inside_positive_attention():
    h = w = 8
    raw_cls = torch.zeros(1, 2, h, w)
    raw_cls[0, 0] = blob(h, w, 2, 4, 2, 4)                    # disease attention: small blob
    raw_ano = blob(h, w, 1, 6, 1, 6)[None, None]              # positive attention covers it (same height)
    labels = torch.tensor([[1.0, 0.0]])
    assert float(bound_loss(raw_cls, raw_ano, labels)) < 1e-6
    # disease attention outside the positive attention: loss 1
    raw_ano_far = blob(h, w, 6, 8, 6, 8)[None, None]
    assert float(bound_loss(raw_cls, raw_ano_far, labels)) == pytest.approx(1.0)
    # half inside
    raw_ano_half = blob(h, w, 2, 3, 0, 8)[None, None]
    assert float(bound_loss(raw_cls, raw_ano_half, labels)) == pytest.approx(0.5, abs=1e-4)
    # a negative class contributes nothing; no positives at all -> 0
    assert float(bound_loss(raw_cls, raw_ano_far, torch.zeros(1, 2))) == 0.0


def test_bound_mean_over_positives_then_classes():
    h = w = 4
    raw_cls = torch.zeros(2, 2, h, w)
    raw_cls[:, :] = blob(h, w, 0, 2, 0, 2)
    raw_ano = torch.zeros(2, 1, h, w)
    raw_ano[0, 0] = blob(h, w, 0, 2, 0, 2)                    # image 0: inside (0); image 1: outside (1)
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # class 0: (0 + 1) / 2 = 0.5 ; class 1: only image 0 -> 0 ; mean over classes 0.25
    assert float(bound_loss(raw_cls, raw_ano, labels)) == pytest.approx(0.25, abs=1e-4)


def test_union_train_and_eval_are_two_formulas():
    h = w = 8
    raw_cls = torch.zeros(1, 2, h, w)
    raw_cls[0, 0] = blob(h, w, 0, 4, 0, 8)                    # U covers the top half
    raw_ano = blob(h, w, 0, 2, 0, 8)[None, None]              # H_a inside U
    labels = torch.tensor([[1.0, 0.0]])
    assert float(union_loss_train(raw_cls, raw_ano, labels)) < 1e-6      # H_a inside U: train formula 0
    # eval (symmetric): [sum(H_a+U) - 2 sum min T T] / sum(H_a+U) = (32+64 - 2*32) / 96 = 1/3
    assert float(union_loss_eval(raw_cls, raw_ano, labels)) == pytest.approx(1 / 3, abs=1e-4)
    # identical maps: both 0 ; disjoint maps: both 1
    assert float(union_loss_eval(raw_cls, raw_cls[:, :1], labels)) < 1e-6
    far = blob(h, w, 6, 8, 0, 8)[None, None]
    assert float(union_loss_train(raw_cls, far, labels)) == pytest.approx(1.0)
    assert float(union_loss_eval(raw_cls, far, labels)) == pytest.approx(1.0)
    # only abnormal images count
    assert float(union_loss_train(raw_cls, far, torch.zeros(1, 2))) == 0.0


def test_union_max_over_positive_classes_only():
    h = w = 4
    raw_cls = torch.zeros(1, 2, h, w)
    raw_cls[0, 1] = blob(h, w, 0, 4, 0, 4)                    # big map on a NEGATIVE class: masked by y_c
    raw_ano = blob(h, w, 0, 2, 0, 2)[None, None]
    labels = torch.tensor([[1.0, 0.0]])
    assert float(union_loss_train(raw_cls, raw_ano, labels)) == pytest.approx(1.0)


def test_ex_cls_zero_without_flagged_box_and_dice_like_otherwise():
    h = w = 6
    refined = torch.zeros(2, 3, h, w)
    refined[0, 1] = blob(h, w, 0, 3, 0, 3, 1.0)
    masks = torch.zeros(2, 3, h, w)
    masks[0, 1] = blob(h, w, 0, 3, 0, 3, 1.0)
    tags = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(ex_cls_loss(refined, masks, torch.zeros(2), tags)) == 0.0     # no flagged image
    assert float(ex_cls_loss(refined, masks, torch.tensor([1.0, 0.0]), tags)) == 0.0   # perfect match
    # prediction shifted off the box: sum (r - m)^2 / (sum r + sum m) = 18 / 18 = 1
    refined[0, 1] = blob(h, w, 3, 6, 3, 6, 1.0)
    assert float(ex_cls_loss(refined, masks, torch.tensor([1.0, 0.0]), tags)) == pytest.approx(1.0)
    # two classes present (class 0 via image 1 perfect-zero: r = m = 0 -> 0/eps = 0): mean (1 + 0) / 2
    flag = torch.tensor([1.0, 1.0])
    assert float(ex_cls_loss(refined, masks, flag, tags)) == pytest.approx(0.5)


def _fake_output(b=2, c=3, h=4, size=8, requires_grad=True):
    torch.manual_seed(0)
    raw_cls = torch.rand(b, c, h, h, requires_grad=requires_grad)
    raw_ano = torch.rand(b, 1, h, h, requires_grad=requires_grad)
    return HAMOutput(torch.randn(b, 1, requires_grad=True), torch.randn(b, c, requires_grad=True),
                     torch.rand(b, 1, size, size), torch.rand(b, c, size, size, requires_grad=requires_grad),
                     raw_ano, raw_cls)


def test_total_is_weighted_sum_and_backprops():
    out = _fake_output()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    masks = torch.zeros(2, 3, 8, 8)
    masks[0, 0, :4, :4] = 1
    total, parts = ham_losses(out, labels, masks, torch.tensor([1.0, 0.0]), labels)
    w = LossWeights()
    expect = w.ano * parts["ano"] + w.cls * parts["cls"] + w.ex_cls * parts["ex_cls"] + \
        w.bound * parts["bound"] + w.union * parts["union"]
    assert torch.allclose(total, expect) and parts["ex_cls"] > 0
    assert (w.ano, w.cls, w.ex_cls, w.bound, w.union) == (0.01, 1.0, 0.5, 0.001, 0.001)
    total.backward()
    assert out.raw_cls.grad is not None and out.refined_cls.grad is not None
    # no masks at all: ex_cls = 0 but still a tensor in the graph
    total2, parts2 = ham_losses(_fake_output(), labels)
    assert float(parts2["ex_cls"].detach()) == 0.0
    _, parts3 = ham_losses(_fake_output(), labels, union="eval")
    assert not torch.isclose(parts3["union"], parts2["union"])


def test_soft_threshold():
    assert float(soft_threshold(torch.tensor(0.75))) == pytest.approx(0.5)
    assert float(soft_threshold(torch.tensor(1.0))) > 0.999


def test_crf_table():
    assert crf_params(10) == (5, 2) and crf_params(44.9) == (5, 2) and crf_params(45) == (12, 5)
    assert crf_params(100) == (15, 6) and crf_params(200) == (25, 11) and crf_params(379) == (50, 13)
    assert crf_params(380) == (110, 26) and crf_params(1000) == (110, 26)
    assert len(CRF_TABLE) == 6
    boxes = {"a.png": {"Mass": [[0, 0, 30, 40], [0, 0, 100, 50]]}, "b.png": {"Cardiomegaly": [[0, 0, 400, 390]]}}
    # Mass: mean(min) = (30 + 50) / 2 = 40 -> (5, 2); Cardiomegaly 390 -> (110, 26)
    assert class_crf_params(boxes) == {"Mass": (5, 2), "Cardiomegaly": (110, 26)}
    # per image and class (what training uses, as the original): min(mean w, mean h) of the image's boxes
    boxes["c.png"] = {"Mass": [[0, 0, 60, 200], [0, 0, 100, 20]], "Nodule": [[5, 5, 20, 30]]}
    # c/Mass: min(mean w 80, mean h 110) = 80 -> (15, 6) (per class over all images it would be 40 -> (5, 2))
    assert image_class_crf_params(boxes) == {"a.png": {"Mass": (12, 5)}, "b.png": {"Cardiomegaly": (110, 26)},
                                             "c.png": {"Mass": (15, 6), "Nodule": (5, 2)}}


def test_crf_refinement_stays_inside_box():
    pytest.importorskip("pydensecrf.densecrf", reason="optional extra 'crf' (pydensecrf2) is not installed")
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:20, 8:20] = 255                                     # bright object inside a larger box
    mask = np.zeros((32, 32), np.uint8)
    mask[4:24, 4:24] = 1
    out = crf_refine_mask(img, mask, sxy=5, srgb=2)
    assert out.shape == mask.shape and not (out & (1 - mask)).any()
    assert out[8:20, 8:20].mean() > 0.5
