"""shared.data.cache.ImageCache: exact round trip, both modes, safe in DataLoader workers, damage detected."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from shared.data import synthetic
from shared.data.cache import ImageCache, resize_image
from shared.data.images import load_image


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = synthetic.generate("nih", tmp_path_factory.mktemp("c") / "nih", n=10, size=48, seed=2)
    from shared.data import nih
    return nih.read_index(root)


def test_round_trip_exact_square_and_shorter(frame, tmp_path):
    for mode in ("square", "shorter"):
        cache = ImageCache.build(frame, tmp_path / mode, size=32, mode=mode, workers=2, progress=False)
        assert len(cache) == len(frame) and cache.mode == mode and cache.size == 32
        for row in frame.itertuples():
            expected = resize_image(load_image(row.path), 32, mode)
            got = cache.get(row.image_id)
            assert got.dtype == np.uint8 and np.array_equal(got, expected), (mode, row.image_id)
            if mode == "shorter":
                assert min(got.shape) == 32 and got.shape[0] >= got.shape[1]
        assert ImageCache.open(tmp_path / mode).get(frame.image_id[0]).shape == cache.get(frame.image_id[0]).shape
    square = ImageCache.open(tmp_path / "square")
    assert square.as_array().shape == (len(frame), 32, 32)
    assert np.array_equal(square.as_array()[3], square.get(frame.image_id[3]))
    shapes = {ImageCache.open(tmp_path / "shorter").get(i).shape for i in frame.image_id}
    assert (40, 32) in shapes   # the twin's one non-square image keeps its aspect ratio


def test_missing_ids_sources_and_rebuild_rules(frame, tmp_path):
    paths = frame["path"].tolist()[:3]
    cache = ImageCache.build(paths, tmp_path / "c", size=24, workers=1, progress=False)
    assert cache.get("nope.png") is None and "nope.png" not in cache
    with pytest.raises(KeyError, match="nope.png"):
        cache["nope.png"]
    assert cache.get(frame.image_id[0]).shape == (24, 24)   # a path list is keyed by file name
    # an existing cache with the same parameters is reused; different parameters are an error
    assert ImageCache.build(paths, tmp_path / "c", size=24, progress=False).dir == cache.dir
    with pytest.raises(ValueError, match="different cache"):
        ImageCache.build(paths, tmp_path / "c", size=16, progress=False)
    with pytest.raises(ValueError, match="different cache"):   # other source files are another cache too
        ImageCache.build(dict(zip(frame.image_id[:3], frame["path"][3:6])), tmp_path / "c", size=24, progress=False)
    rebuilt = ImageCache.build(paths, tmp_path / "c", size=16, mode="shorter", workers=1, progress=False,
                               if_different="rebuild")
    assert (rebuilt.size, rebuilt.mode) == (16, "shorter")
    cache = ImageCache.build(paths, tmp_path / "c", size=24, workers=1, progress=False, if_different="rebuild")
    with pytest.raises(ValueError, match="more than once"):
        ImageCache.build(paths + paths[:1], tmp_path / "d", size=16, progress=False)
    with pytest.raises(FileNotFoundError, match="not an image cache"):
        ImageCache.open(tmp_path)
    data = tmp_path / "c" / "data.u8"
    data.write_bytes(data.read_bytes()[:-5])
    with pytest.raises(ValueError, match="damaged"):
        ImageCache.open(tmp_path / "c")


def test_pickles_and_reads_in_dataloader_workers(frame, tmp_path):
    import torch
    from shared.data.dataset import ImageDataset
    cache = ImageCache.build(frame, tmp_path / "c", size=32, mode="square", workers=1, progress=False)
    cache.get(frame.image_id[0])               # opens the memmap in this process
    clone = pickle.loads(pickle.dumps(cache))   # the memmap is not pickled, it reopens lazily
    assert clone._mm is None and np.array_equal(clone.get(frame.image_id[1]), cache.get(frame.image_id[1]))
    ds = ImageDataset(frame, frame.attrs["label_columns"], cache=cache)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    got = torch.cat([b["image"] for b in loader])
    expected = torch.stack([torch.from_numpy(cache.get(i)).float().div(255).expand(3, -1, -1)
                            for i in frame.image_id])
    assert torch.allclose(got, expected)
