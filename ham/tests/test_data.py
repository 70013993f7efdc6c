"""HAM's data: shipped split files vs the spec's counts, layouts, joint transforms, box masks, CLI errors."""
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from shared.data import nih
from shared.data.splits import FILES, ham_boxes
from shared.data.synthetic import generate

from ham.data import DataConfig, HAMDataset, _boxes_from_frame, build_splits, load_index, resolve_list


@pytest.fixture(scope="module")
def real_index():
    """NIH's real label table (shipped) without images: enough to resolve HAM's split files."""
    return nih.read_index(FILES / "nih", check_files=False), _boxes_from_frame(ham_boxes("nih"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate("nih", tmp_path_factory.mktemp("ham_syn") / "nih", n=60, size=64, seed=1)


def test_ham_fold_files_match_spec_counts(real_index):
    frame, boxes = real_index
    assert len(boxes) == 880 and sum(len(v) for d in boxes.values() for v in d.values()) == 984
    cfg = DataConfig(layout="nih", fold=1, train="Main/train_0.7_0.7", train_boxes="bbox/train_0.7",
                     val="Main/val_0.1_0.1", val_boxes="bbox/val_0.1", test="Main/test_0.2_0.2",
                     test_boxes="bbox/test")
    s = build_splits(cfg, frame, boxes)
    assert (len(s.train), len(s.val), len(s.test), len(s.test_box_ids)) == (73127, 12331, 26662, 186)
    assert s.train_box_ids <= set(s.train["image_id"]) and s.train_box_ids <= set(boxes)
    assert len(resolve_list("Main/train_0.5_0.8", cfg, frame, boxes)) == 56728
    official = DataConfig(layout="nih", train="Main/train_val_list", test="Main/test_list",
                          test_boxes="Main/test_bboxs")
    s = build_splits(official, frame, boxes)
    assert (len(s.train), len(s.test), len(s.test_box_ids)) == (86524, 25596, 880)
    assert s.val is s.test and "test split" in s.notes[0]          # faithful: validation on test
    assert len(resolve_list("Main/train_wo_bbox", official, frame, boxes)) == 111240


def test_bbox_test_folds_partition_the_box_images(real_index):
    frame, boxes = real_index
    seen = []
    for k in range(1, 6):
        seen += resolve_list("bbox/test", DataConfig(layout="nih", fold=k), frame, boxes)
    assert len(seen) == len(set(seen)) == 880 and set(seen) == set(boxes)


def test_honest_validation_is_patient_disjoint(real_index):
    frame, boxes = real_index
    cfg = DataConfig(layout="nih", fold=2, train="Main/train_0.5_0.8", train_boxes="bbox/train_0.8",
                     test="Main/test_0_0.2", test_boxes="bbox/test", honest_validation=True)
    s = build_splits(cfg, frame, boxes)
    assert not set(s.train["patient_id"]) & set(s.val["patient_id"])
    assert s.val is not s.test and s.train_box_ids <= set(s.train["image_id"])
    assert "honest validation" in s.notes[0]


def test_unknown_list_and_absent_images_are_errors(real_index, synth):
    frame, boxes = real_index
    with pytest.raises(Exception, match="not a HAM ImageSets file"):
        resolve_list("Main/nope", DataConfig(layout="nih"), frame, boxes)
    cfg = DataConfig(layout="nih", root=str(synth), train="Main/train_0.7_0.7")
    f, b, _ = load_index(cfg)
    with pytest.raises(Exception, match="not in the index"):
        resolve_list(cfg.train, cfg, f, b)   # HAM's real file names are not in the synthetic twin
    with pytest.raises(Exception, match="does not exist"):
        load_index(DataConfig(layout="nih", root=str(synth / "missing")))
    with pytest.raises(Exception, match="build_annotations"):
        load_index(DataConfig(layout="ham", root=str(synth)))


def test_ham_layout_equals_nih_layout(synth, tmp_path):
    import shutil
    from ham.build_annotations import build
    root = tmp_path / "ham"
    shutil.copytree(synth, root)
    counts = build(root, root, imagesets=False)
    assert counts["images"] == 60
    f_nih, b_nih, c = load_index(DataConfig(layout="nih", root=str(root)))
    f_ham, b_ham, c2 = load_index(DataConfig(layout="ham", root=str(root)))
    assert c == c2
    f_ham = f_ham.set_index("image_id").loc[f_nih["image_id"]]
    np.testing.assert_array_equal(f_ham[c].to_numpy(), f_nih[c].to_numpy())
    assert (f_ham["split"].to_numpy() == f_nih["split"].to_numpy()).all()
    assert b_ham.keys() == b_nih.keys()
    for k in b_nih:
        for cls in b_nih[k]:
            np.testing.assert_allclose(b_ham[k][cls], b_nih[k][cls], rtol=1e-6)


def test_joint_transform_keeps_masks_on_boxes(synth):
    cfg = DataConfig(layout="nih", root=str(synth), train="split:train", train_boxes="boxes:train",
                     test="split:test", test_boxes="boxes:test")
    frame, boxes, classes = load_index(cfg)
    s = build_splits(cfg, frame, boxes)
    ds = HAMDataset(s.train, classes, boxes, s.train_box_ids, train=True, img_size=48)
    ids = [i for i, x in enumerate(ds.ids) if x in s.train_box_ids]
    assert ids
    # a constant-image check: the box region drawn bright in the image must follow the mask through the
    # random resize / crop / flip -> replace the loader with an image that IS the box mask
    i = ids[0]
    from ham import data as hd
    orig = hd.load_image
    try:
        h, w = orig(ds.paths[i]).shape
        cls, bxs = next(iter(boxes[ds.ids[i]].items()))
        from shared.metrics.localization import boxes_to_mask
        fake = boxes_to_mask(bxs, h, w).astype(np.uint8) * 255
        hd.load_image = lambda path: fake
        for seed in range(4):
            random.seed(seed)
            item = ds[i]
            m = item["masks"][classes.index(cls)].bool()
            img = item["image"][0] > 0
            assert item["flag"] == 1 and item["has_box"][classes.index(cls)] == 1
            agree = (m == img).float().mean()
            assert agree > 0.97, agree
    finally:
        hd.load_image = orig
    # eval items: masks at the input size for box images; a box-free image has zero masks and flag 0
    ev = HAMDataset(s.test, classes, boxes, s.test_box_ids, train=False, img_size=48)
    j = next(k for k, x in enumerate(ev.ids) if x not in boxes)
    item = ev[j]
    assert item["masks"].shape == (len(classes), 48, 48) and item["masks"].sum() == 0 and item["flag"] == 0
    assert torch.equal(item["bbox_tag"], item["labels"])     # no box: bbox_tags = the label vector
    assert abs(float(item["image"].mean())) <= 1.0 and item["image"].min() >= -1 and item["image"].max() <= 1


def test_crf_refined_training_masks_stay_inside_their_boxes(synth):
    pytest.importorskip("pydensecrf.densecrf", reason="optional extra 'crf' (pydensecrf2) is not installed")
    from ham.data import crf_table_for
    cfg = DataConfig(layout="nih", root=str(synth), train="split:train", train_boxes="boxes:train",
                     test="split:test", test_boxes="boxes:test", use_crf=True)
    frame, boxes, classes = load_index(cfg)
    s = build_splits(cfg, frame, boxes)
    table = crf_table_for(cfg, boxes)
    assert table and all(v == (5, 2) for d in table.values() for v in d.values())   # 64-px boxes: smallest row
    kw = dict(train=False, img_size=64)
    plain = HAMDataset(s.train, classes, boxes, s.train_box_ids, **kw)
    refined = HAMDataset(s.train, classes, boxes, s.train_box_ids, crf=table, **kw)
    i = next(k for k, x in enumerate(plain.ids) if x in s.train_box_ids)
    box, crf = plain[i]["masks"].bool(), refined[i]["masks"].bool()
    assert not (crf & ~box).any() and crf.sum() <= box.sum()


@pytest.mark.parametrize("protocol", ["cls", "loc"])
def test_max_images_truncates_train_and_box_lists_consistently(real_index, protocol):
    """data.max_images on the shipped fold lists: the box-supervised images are the box images left in the
    truncated train list (each list cut on its own gave box images outside the train list)."""
    frame, boxes = real_index
    train, train_boxes = {"cls": ("Main/train_0.7_0.7", "bbox/train_0.7"),
                          "loc": ("Main/train_0.5_0.8", "bbox/train_0.8")}[protocol]
    full_cfg = DataConfig(layout="nih", fold=1, train=train, train_boxes=train_boxes, test="Main/test_0_0.2",
                          test_boxes="bbox/test")
    full_train = resolve_list(train, full_cfg, frame, boxes)
    full_box = set(resolve_list(train_boxes, full_cfg, frame, boxes))
    n = full_train.index(next(i for i in full_train if i in full_box)) + 500   # a cut that keeps some box images
    cfg = replace(full_cfg, max_images=n)
    s = build_splits(cfg, frame, boxes)
    assert s.train["image_id"].tolist() == full_train[:n]
    assert s.train_box_ids == full_box & set(full_train[:n]) and s.train_box_ids
    assert len(s.test) <= n + 200 and any("max_images" in note for note in s.notes)
    small = build_splits(replace(full_cfg, max_images=200), frame, boxes)
    assert len(small.train) == 200 and small.train_box_ids <= set(small.train["image_id"])


def test_fold_written_in_a_list_name_is_honoured(real_index):
    frame, boxes = real_index
    fold1 = DataConfig(layout="nih", fold=1)
    fold3_test = resolve_list("bbox/test", DataConfig(layout="nih", fold=3), frame, boxes)
    assert resolve_list("bbox/fold3/test", fold1, frame, boxes) == fold3_test
    assert resolve_list("bbox/fold3/test", fold1, frame, boxes) != resolve_list("bbox/test", fold1, frame, boxes)
    assert len(resolve_list("Main/fold2/train_0.5_0.8", fold1, frame, boxes)) == \
        len(resolve_list("Main/train_0.5_0.8", DataConfig(layout="nih", fold=2), frame, boxes))
    with pytest.raises(Exception, match="not a HAM ImageSets file"):
        resolve_list("bbox/fold9/test", fold1, frame, boxes)


def _chexpert_like(tmp_path, folder="CheXpert-v1.0"):
    """Two hand-made 'CheXpert' images (40 x 32 files, downscaled from different originals) and a HAM CheXpert box
    file (xyxy in the originals' pixels)."""
    import json
    from PIL import Image
    root = tmp_path / folder / "train" / "patient1" / "study1"
    root.mkdir(parents=True)
    paths = []
    for k in (1, 2):
        p = root / f"view{k}_frontal.jpg"
        Image.fromarray(np.full((32, 40), 128, np.uint8)).save(p)
        paths.append(str(p))
    ids = ["train/patient1/study1/view1_frontal.jpg", "train/patient1/study1/view2_frontal.jpg"]
    # original 1 is 400 x 480 (non-uniform downscale: x / 10, y / 15); original 2 is 2000 x 1600 (/ 50 both)
    box_file = tmp_path / "boxes.json"
    box_file.write_text(json.dumps({ids[0]: {"Cardiomegaly": [[100, 150, 300, 300]]},
                                    ids[1]: {"edema": [[1000, 800, 1500, 1200]]}}))
    sizes = tmp_path / "sizes.csv"
    sizes.write_text(f"image_id,width,height\n{ids[0]},400,480\n{ids[1]},2000,1600\n")
    frame = pd.DataFrame({"path": paths, "image_id": ids, "Cardiomegaly": [1.0, 0.0], "Edema": [0.0, 1.0]})
    return frame, _boxes_from_frame(ham_boxes("chexpert", box_file)), ["Cardiomegaly", "Edema"], sizes


def test_chexpert_boxes_scale_x_and_y_per_image_or_fail_loudly(tmp_path):
    from ham.data import read_box_sizes
    frame, boxes, classes, sizes = _chexpert_like(tmp_path)
    ids = set(frame["image_id"])
    ids_in_order = frame["image_id"].tolist()
    kw = dict(train=False, img_size=32)
    # boxes in original pixels on smaller files: an error naming the fix, never empty masks
    with pytest.raises(Exception, match="box_sizes"):
        HAMDataset(frame, classes, boxes, ids, **kw)
    # per-image original sizes: x and y scaled separately
    ds = HAMDataset(frame, classes, boxes, ids, box_sizes=read_box_sizes(str(sizes)), **kw)
    assert ds.box_scales[frame["image_id"][0]] == pytest.approx((0.1, 32 / 480))
    from ham.data import image_size
    assert image_size(frame["path"][0]) == (40, 32)
    m0, m1 = ds[0]["masks"][0].numpy(), ds[1]["masks"][1].numpy()   # at 32 x 32 (x resized by 32/40)
    rows, cols = np.nonzero(m0)
    # box 1: x 100..300 -> 10..30 px of 40 -> 8..24 of 32; y 150..300 -> 10..20 px of 32
    assert (rows.min(), rows.max() + 1) == (10, 20) and (cols.min(), cols.max() + 1) == (8, 24)
    rows, cols = np.nonzero(m1)
    # box 2: x 1000..1500 / 50 -> 20..30 of 40 -> 16..24 of 32; y 800..1200 / 50 -> 16..24
    assert (rows.min(), rows.max() + 1) == (16, 24) and (cols.min(), cols.max() + 1) == (16, 24)
    # prepare's own prepare_sizes.csv (paths below the copy's root, original sizes) gives the same scales
    prepared = tmp_path / "prepare_sizes.csv"
    prepared.write_text("path,orig_height,orig_width,height,width\n"
                        f"CheXpert-v1.0/{ids_in_order[0]},480,400,32,40\n"
                        f"CheXpert-v1.0/{ids_in_order[1]},1600,2000,32,40\n")
    ds = HAMDataset(frame, classes, boxes, ids, box_sizes=read_box_sizes(str(prepared)), **kw)
    assert ds.box_scales[ids_in_order[0]] == pytest.approx((0.1, 32 / 480))
    # an image without a size in the table is an error
    sizes.write_text(f"image_id,width,height\n{frame['image_id'][0]},400,480\n")
    with pytest.raises(Exception, match="no size for the box image"):
        HAMDataset(frame, classes, boxes, ids, box_sizes=read_box_sizes(str(sizes)), **kw)
    # explicit clip: a counted warning instead of the error
    with pytest.warns(UserWarning, match="2 boxes of 2 images lie beyond"):
        ds = HAMDataset(frame, classes, boxes, ids, box_outside="clip", **kw)
    assert "clip" in ds.notes[0]
    # a square reference size scales x by width / ref and y by height / ref
    ds = HAMDataset(frame, classes, {k: v for k, v in boxes.items() if k == frame["image_id"][0]}, ids,
                    box_reference_size=320, box_outside="clip", **kw)
    assert ds.box_scales[frame["image_id"][0]] == pytest.approx((40 / 320, 32 / 320))


def test_chexpert_small_files_need_the_original_sizes(tmp_path):
    frame, boxes, classes, _ = _chexpert_like(tmp_path, folder="CheXpert-v1.0-small")
    small = {k: {c: v / 100 for c, v in d.items()} for k, d in boxes.items()}   # boxes that happen to fit
    with pytest.raises(Exception, match="CheXpert-v1.0-small"):
        HAMDataset(frame, classes, small, set(frame["image_id"]), train=False, img_size=32)


@pytest.mark.parametrize("order", ["wang", "alphabetical"])
def test_nih_classes_follow_the_configured_order(synth, order):
    """Default: the original's Wang order (its cls_fc rows and log lines); a dataset row's labels follow it."""
    from shared.data.labels import NIH_LABELS, NIH_WANG_ORDER
    cfg = DataConfig(layout="nih", root=str(synth), train="split:train", test="split:test", test_boxes=None,
                     **({} if order == "wang" else {"nih_class_order": order}))
    frame, boxes, classes = load_index(cfg)
    assert classes == (NIH_WANG_ORDER if order == "wang" else NIH_LABELS)
    assert classes[2] == ("Effusion" if order == "wang" else "Consolidation")
    ds = HAMDataset(frame, classes, boxes, set(), train=False, img_size=32, with_masks=False)
    row = int(frame[classes[2]].to_numpy().argmax())
    assert ds.labels[row, 2] == frame[classes[2]].iloc[row] == 1.0
