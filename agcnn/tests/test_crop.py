"""Attention-guided crop: spec section 6 properties, and agreement with per-sample scipy/OpenCV references."""
import numpy as np
import pytest
import torch

from agcnn.crop import (AttentionCrop, _scipy_labels, attention_boxes, crop_and_resize, label_components,
                        largest_component, otsu_threshold, quantise, reference_boxes, reference_crops)


def random_features(n, k=16, h=7, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, h, w, generator=g).relu()


def bumps(n, size=7, seed=0):
    """Single Gaussian hot spot per map (unimodal), as [n, 1, size, size] features."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, s = g.uniform(0, size - 1), g.uniform(0, size - 1), g.uniform(0.8, 2.5)
        out.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    return torch.tensor(np.stack(out)[:, None], dtype=torch.float32)


def check_inside(boxes, h, w):
    x0, y0, x1, y1 = boxes.T
    assert ((0 <= x0) & (x0 <= x1) & (x1 < w) & (0 <= y0) & (y0 <= y1) & (y1 < h)).all()


@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("p", [0.2, 0.45, 0.6])
def test_labels_match_scipy(connectivity, p):
    g = torch.Generator().manual_seed(int(p * 100) + connectivity)
    masks = torch.rand(8, 45, 38, generator=g) < p  # odd sizes exercise the 2x2-block padding
    lab, converged, _ = label_components(masks, connectivity)
    assert converged.all()
    for i in range(len(masks)):
        np.testing.assert_array_equal(lab[i].numpy(), _scipy_labels(masks[i].numpy(), connectivity))


def test_iteration_cap_falls_back_to_exact_cpu_labels():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 40, 40, generator=g) < 0.5
    kept_capped, size_capped, n_cpu, iters = largest_component(masks, max_iters=1, labeler="tensor")
    kept, size, n_cpu0, _ = largest_component(masks, labeler="tensor")
    assert iters == 1 and n_cpu > 0 and n_cpu0 == 0
    assert torch.equal(kept_capped, kept) and torch.equal(size_capped, size)


def test_spiral_converges_or_falls_back_exactly():
    # a one-pixel-wide spiral: worst case for propagation; the result must still equal scipy's
    m = np.zeros((31, 31), bool)
    top, left, bottom, right = 0, 0, 30, 30
    while top <= bottom and left <= right:
        m[top, left:right + 1] = True
        m[top:bottom + 1, right] = True
        if top + 2 <= bottom:
            m[bottom, left:right + 1] = True
        if left + 2 <= right:
            m[top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            m[top, left - 2:left] = True if left - 2 >= 0 else m[top, left - 2:left]
    kept, size, _, _ = largest_component(torch.from_numpy(m)[None], max_iters=8, labeler="tensor")
    ref = _scipy_labels(m, 8)
    counts = np.bincount(ref[ref < m.size], minlength=m.size)
    assert int(size[0]) == counts.max()
    np.testing.assert_array_equal(kept[0].numpy().ravel(), ref == counts.argmax())


@pytest.mark.parametrize("connectivity", [8, 4])
def test_scipy_and_tensor_labelers_keep_the_same_component(connectivity):
    """The CPU default (scipy per image) and the device path (batched tensor ops) agree exactly, ties included
    (two equal squares: the first in raster order wins) and empty masks (size 0, nothing kept)."""
    g = torch.Generator().manual_seed(11 + connectivity)
    masks = torch.rand(10, 45, 38, generator=g) < 0.45
    masks[0] = False
    masks[1] = False
    masks[1, 30:33, 2:5] = True
    masks[1, 5:8, 20:23] = True
    ts = largest_component(masks, connectivity, labeler="tensor")
    sp = largest_component(masks, connectivity, labeler="scipy")
    auto = largest_component(masks, connectivity)
    assert torch.equal(ts[0], sp[0]) and torch.equal(ts[1], sp[1]) and torch.equal(auto[0], sp[0])
    assert sp[1][0] == 0 and not sp[0][0].any() and sp[0][1, 5, 20] and not sp[0][1, 30, 2]
    assert sp[2:] == (0, 0) and auto[2:] == (0, 0)  # auto = scipy on a CPU tensor: no union-find rounds


def test_labeler_choice():
    from agcnn.crop import resolve_labeler

    assert resolve_labeler("auto", torch.device("cpu")) == "scipy"
    assert resolve_labeler("auto", torch.device("cuda")) == "tensor"
    assert resolve_labeler("tensor", torch.device("cpu")) == "tensor"
    with pytest.raises(ValueError, match="labeler"):
        AttentionCrop(labeler="opencv")


@pytest.mark.parametrize("labeler", ["tensor", "scipy"])
@pytest.mark.parametrize("stat", ["max", "l1", "l2"])
def test_boxes_agree_with_per_sample_opencv(stat, labeler):
    feats = random_features(16, seed=1)
    size = (224, 224) if stat == "max" else (112, 112)
    ours = attention_boxes(feats, size, tau=0.7, stat=stat, labeler=labeler).boxes.numpy()
    ref = reference_boxes(feats.numpy(), size, tau=0.7, stat=stat)
    agree = (ours == ref).all(1).mean()
    assert agree >= 0.95, (ours, ref)  # float rounding of the resize may flip a border pixel, rarely


def test_otsu_matches_opencv():
    import cv2

    feats = random_features(16, seed=2)
    info = attention_boxes(feats, (96, 96), threshold="otsu")
    t = otsu_threshold(info.heat)
    for i in range(16):
        q = quantise(info.heat[i]).numpy().astype(np.uint8)
        t_cv, _ = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert int(t[i]) == int(t_cv)
    ref = reference_boxes(feats.numpy(), (96, 96), threshold="otsu")
    assert (info.boxes.numpy() == ref).all(1).mean() >= 0.9


def test_raising_tau_gives_subset_mask_and_no_larger_box():
    feats = bumps(12, seed=4)
    taus = [0.1, 0.3, 0.5, 0.7, 0.9]
    infos = [attention_boxes(feats, (96, 96), tau=t) for t in taus]
    for lo, hi in zip(infos[:-1], infos[1:]):
        assert not (hi.mask & ~lo.mask).any()
        assert (hi.boxes[:, :2] >= lo.boxes[:, :2]).all() and (hi.boxes[:, 2:] <= lo.boxes[:, 2:]).all()
    # the raw threshold masks nest for any map
    feats = random_features(8, seed=5)
    a = attention_boxes(feats, (64, 64), tau=0.4).heat > 0.4
    b = attention_boxes(feats, (64, 64), tau=0.8).heat > 0.8
    assert not (b & ~a).any()


def test_top_left_hot_spot_gives_top_left_box():
    f = torch.zeros(2, 4, 7, 7)
    f[:, :, 0, 0] = 5.0
    f[:, :, 1, 1] = 2.0
    boxes = attention_boxes(f, (96, 96)).boxes
    assert (boxes[:, 2] < 48).all() and (boxes[:, 3] < 48).all()
    assert (boxes[:, :2] == 0).all()


def test_boxes_inside_image_for_random_maps_and_sizes():
    for (h, w) in [(64, 64), (97, 130)]:
        info = attention_boxes(random_features(8, seed=6), (h, w))
        check_inside(info.boxes, h, w)
        assert info.cpu_fallback == 0


@pytest.mark.parametrize("value", [0.0, 3.0, float("nan")])
def test_degenerate_maps_fall_back_to_full_image(value):
    f = torch.full((3, 8, 7, 7), value)
    info = attention_boxes(f, (64, 80))
    assert info.fallback.all()
    assert (info.boxes == torch.tensor([0, 0, 79, 63])).all()


def test_tau_one_and_otsu_degenerate_do_not_crash():
    info = attention_boxes(random_features(4), (32, 32), tau=1.0)  # empty mask -> full image
    assert info.fallback.all() and (info.boxes == torch.tensor([0, 0, 31, 31])).all()
    info = attention_boxes(torch.zeros(2, 3, 7, 7), (32, 32), threshold="otsu")
    assert info.fallback.all()


def test_tau_near_zero_gives_about_the_whole_image():
    info = attention_boxes(random_features(8, seed=7), (112, 112), tau=1e-4)
    area = (info.boxes[:, 2] - info.boxes[:, 0] + 1) * (info.boxes[:, 3] - info.boxes[:, 1] + 1)
    assert (area >= 0.9 * 112 * 112).all()


def _valid_region(box, size_in, out):
    x0, y0, x1, y1 = box
    def axis(a0, a1):
        w = a1 - a0 + 1
        src = (np.arange(out) + 0.5) * w / out - 0.5
        return (src >= 0) & (src <= w - 1)
    return np.outer(axis(y0, y1), axis(x0, x1))


@pytest.mark.parametrize("method", ["roi_align", "interpolate"])
def test_crop_matches_per_sample_opencv_inside_the_box(method):
    g = torch.Generator().manual_seed(8)
    images = torch.rand(6, 3, 96, 96, generator=g)
    # boxes no larger than the output (upsampling, as AG-CNN's crops always are; roi_align averages several
    # samples per output pixel when it downsamples, cv2 INTER_LINEAR does not)
    boxes = torch.tensor([[0, 0, 63, 63], [10, 20, 50, 40], [0, 0, 0, 0], [90, 5, 95, 60], [30, 30, 31, 70],
                          [5, 60, 60, 95]])
    ours = crop_and_resize(images, boxes, 64, method=method).numpy()
    ref = reference_crops(images.numpy(), boxes.numpy(), 64)
    for i, box in enumerate(boxes.numpy()):
        valid = _valid_region(box, 96, 64)
        np.testing.assert_allclose(ours[i][:, valid], ref[i][:, valid], atol=1e-4)


def test_full_box_same_size_is_identity_and_channels_stay_in_order():
    images = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1).expand(2, 3, 32, 32).contiguous()
    images = images + torch.rand(2, 1, 32, 32)
    out = crop_and_resize(images, torch.tensor([[0, 0, 31, 31]] * 2), 32)
    torch.testing.assert_close(out, images)
    crop = crop_and_resize(images, torch.tensor([[4, 8, 20, 12]] * 2), 16)
    for c in range(3):  # channel c stays channel c (the seed repository reshaped HWC <-> CHW instead)
        assert ((crop[:, c] >= c) & (crop[:, c] <= c + 1)).all()


def test_attention_crop_module_from_higher_resolution_source():
    crop = AttentionCrop(tau=0.7, out_size=48)
    f = torch.zeros(1, 2, 7, 7)
    f[0, :, 0, 0] = 1.0
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 112), torch.linspace(0, 1, 112), indexing="ij")
    source = torch.stack([yy, xx, yy * xx])[None]  # smooth, so both resolutions crop the same content
    images = torch.nn.functional.interpolate(source, size=(56, 56), mode="bilinear", antialias=True)
    crops, info = crop(images, f, source=source)
    direct, _ = crop(images, f)
    assert crops.shape == direct.shape == (1, 3, 48, 48)
    assert (info.boxes[0, 2:] < 28).all()
    torch.testing.assert_close(crops, direct, atol=0.03, rtol=0)
