"""shared.data.dataset.ImageDataset and shared.data.transforms, on real NIH images read through nih.read_index."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from shared.data import DataError, dataset as dataset_mod, nih, transforms
from shared.data.dataset import ImageDataset
from shared.data.labels import NIH_LABELS


@pytest.fixture
def real_nih_root(tmp_path, real_images_dir, files_dir):
    """The three real NIH images (symlinked) with their real Data_Entry rows in the NIH layout."""
    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    names = ["00000001_000.png", "00000001_001.png", "00000001_002.png"]
    for n in names:
        os.symlink(real_images_dir / n, root / "images" / n)
    table = pd.read_csv(files_dir / "nih" / "Data_Entry_2017_v2020.csv.gz", nrows=3)
    assert table["Image Index"].tolist() == names
    table.to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    (root / "train_val_list.txt").write_text("\n".join(names))
    (root / "test_list.txt").write_text("")
    return root


def test_dataset_items(real_nih_root):
    frame = nih.read_index(real_nih_root)
    assert frame["Cardiomegaly"].tolist() == [1, 1, 1] and frame["Emphysema"].tolist() == [0, 1, 0]
    ds = ImageDataset(frame, NIH_LABELS, transform=transforms.eval_transform(64, crop_pct=0.95))
    assert len(ds) == 3
    item = ds[1]
    assert set(item) == {"image", "labels", "index"} and item["index"] == 1
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["labels"].dtype == torch.float32 and item["labels"].shape == (14,)
    assert item["labels"][NIH_LABELS.index("Emphysema")] == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["index"].tolist() == [0, 1, 2]
    default = ImageDataset(frame, [])[0]
    assert default["image"].shape == (3, 1024, 1024) and 0 <= default["image"].min() <= default["image"].max() <= 1
    assert default["labels"].shape == (0,)


def test_dataset_cache_decodes_once(real_nih_root, monkeypatch):
    frame = nih.read_index(real_nih_root)
    calls = []

    class Cache:
        def get(self, image_id):
            calls.append(image_id)
            return np.full((10, 12), 7, np.uint8) if image_id == "00000001_000.png" else None

    def no_disk(path):
        raise AssertionError("decoded from disk although cached")

    monkeypatch.setattr(dataset_mod, "load_image", no_disk)
    ds = ImageDataset(frame, NIH_LABELS, cache=Cache())
    assert ds[0]["image"].shape == (3, 10, 12) and calls == ["00000001_000.png"]
    decoded = []
    monkeypatch.setattr(dataset_mod, "load_image", lambda p: decoded.append(p) or np.zeros((5, 5), np.uint8))
    ds[2]
    assert len(decoded) == 1 and decoded[0].endswith("00000001_002.png")


def test_dataset_errors(real_nih_root):
    frame = nih.read_index(real_nih_root)
    with pytest.raises(DataError, match="missing column.*'Tumour'"):
        ImageDataset(frame, ["Tumour"])
    bad = frame.assign(Mass="yes")
    with pytest.raises(DataError, match="'Mass' is not numeric"):
        ImageDataset(bad, ["Mass"])
    broken = frame.copy()
    broken.loc[0, "path"] = str(real_nih_root / "gone.png")
    from shared.data.images import ImageReadError
    with pytest.raises(ImageReadError, match="gone.png"):
        ImageDataset(broken, NIH_LABELS)[0]


def test_transforms_sizes():
    assert [transforms.resize_size(s, 0.95) for s in (448, 416, 256)] == [471, 437, 269]
    assert transforms.resize_size(224, 224 / 256) == 256 and transforms.resize_size(224, None) == 224
    from PIL import Image
    img = Image.new("RGB", (300, 200), (128, 128, 128))
    out = transforms.eval_transform(64, crop_pct=0.8, mean=transforms.HALF_MEAN, std=transforms.HALF_STD)(img)
    assert out.shape == (3, 64, 64) and torch.allclose(out, torch.full_like(out, 128 / 255 * 2 - 1), atol=1e-2)
    squash = transforms.eval_transform(32, resize_mode="squash", interpolation="bilinear")
    assert squash.transforms[0].size == (32, 32)
    back = transforms.denormalize(transforms.to_tensor_normalize()(img))
    assert torch.allclose(back, torch.full_like(back, 128 / 255), atol=1e-4)
    with pytest.raises(ValueError, match="interpolation"):
        transforms.eval_transform(32, interpolation="cubic-ish")
