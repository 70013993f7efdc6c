"""ham.visual: a row per (test box image, class) for every box image by default, thumbnails, lazy loading."""
import re

import cv2
import torch

from shared.data.synthetic import generate
from shared.engine import make_loader

from ham.data import DataConfig, HAMDataset, build_splits, load_index
from ham.model import HAM
from ham.visual import visualise


def test_page_has_every_box_image_by_default_as_lazy_thumbnails(tmp_path):
    root = generate("nih", tmp_path / "nih", n=40, size=64, seed=3)
    cfg = DataConfig(layout="nih", root=str(root), train="split:train", test="split:test", test_boxes="boxes:all")
    frame, boxes, classes = load_index(cfg)
    s = build_splits(cfg, frame, boxes)
    box_ids = [i for i in s.test["image_id"] if i in boxes]
    frame_box = s.test[s.test["image_id"].isin(box_ids)]
    ds = HAMDataset(frame_box, classes, boxes, set(box_ids), train=False, img_size=64)
    loader = make_loader(ds, 4, shuffle=False, train=False, num_workers=0)
    torch.manual_seed(0)
    model = HAM(num_classes=len(classes), backbone="resnet18", fa_channels=8, head_channels=8).eval()
    page = visualise(model, loader, classes, torch.device("cpu"), tmp_path / "all", thumb=32)
    text = page.read_text()
    assert len(box_ids) > 5
    rows = re.findall(r"<tr><td>([^<]+)<br>", text)
    assert set(rows) == set(box_ids)                           # every box image, not the first 40 (or N)
    assert text.count("IoU=") == sum(len(boxes[i]) for i in box_ids)
    srcs = re.findall(r'<img src="([^"]+)" width="192" loading="lazy"', text)
    assert len(srcs) == 8 * text.count("IoU=")
    assert cv2.imread(str(page.parent / srcs[0])).shape == (32, 32, 3)          # thumbnails
    capped = visualise(model, loader, classes, torch.device("cpu"), tmp_path / "capped", max_images=2, thumb=0)
    capped_rows = re.findall(r"<tr><td>([^<]+)<br>", capped.read_text())
    assert len(set(capped_rows)) == 2
    src = re.findall(r'<img src="([^"]+)"', capped.read_text())[0]
    assert cv2.imread(str(capped.parent / src)).shape == (64, 64, 3)
