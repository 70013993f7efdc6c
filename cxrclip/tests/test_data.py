"""CheXpert rows become studies: a study's views pair up as the two images of one sample."""
from __future__ import annotations

import pandas as pd
import pytest

from cxrclip.data import PairDataset, chexpert_samples
from shared.data import chexpert, synthetic


class PathPairs(PairDataset):
    """PairDataset that hands back the chosen paths instead of decoded images."""

    def _image(self, path: str) -> str:
        return path


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return synthetic.generate("chexpert", tmp_path_factory.mktemp("twin") / "chexpert", n=40, size=32, seed=0)


def test_chexpert_studies_pair_their_views(twin):
    frame = chexpert.read_index(twin, split="train", uncertain="keep", blank="keep")
    samples = chexpert_samples(twin, "train")
    assert len(samples) == frame["study_id"].nunique()
    assert sorted(p for s in samples for p in s.images) == sorted(frame["path"])  # nothing dropped or doubled
    multi = [s for s in samples if len(s.images) > 1]
    assert multi, "the twin has frontal + lateral studies"
    for s in multi:
        assert len({p.rsplit("/", 1)[0] for p in s.images}) == 1  # one study folder
        assert "frontal" in s.images[0] and "lateral" in s.images[1]  # frontal first
    pairs = PathPairs(multi, transform=None, train=True, text_fn=lambda sample, draw: "")
    for i in range(len(multi)):
        item = pairs[i]
        assert item["image1"] != item["image2"] and {item["image1"], item["image2"]} <= set(multi[i].images)
    single = [s for s in samples if len(s.images) == 1][0]
    item = PathPairs([single], transform=None, train=True, text_fn=lambda sample, draw: "")[0]
    assert item["image1"] == item["image2"]  # one view: two augmentations of the same image
    evaluation = PathPairs(multi, transform=None, train=False, text_fn=lambda sample, draw: "")[0]
    assert (evaluation["image1"], evaluation["image2"]) == tuple(multi[0].images[:2])


def test_chexpert_views_with_different_labels_stay_apart(tmp_path):
    twin = synthetic.generate("chexpert", tmp_path / "chexpert", n=40, size=32, seed=0)  # own copy: edited below
    csv = next(twin.rglob("train.csv"))
    table = pd.read_csv(csv)
    lateral = table.index[table["Frontal/Lateral"] == "Lateral"][0]
    flipped = 1.0 if table.loc[lateral, "Cardiomegaly"] != 1.0 else 0.0
    table.loc[lateral, "Cardiomegaly"] = flipped
    table.to_csv(csv, index=False)
    study = "/".join(table.loc[lateral, "Path"].split("/")[2:4])
    samples = [s for s in chexpert_samples(twin, "train") if f"/{study}/" in s.images[0]]
    assert len(samples) == 2 and all(len(s.images) == 1 for s in samples)
    assert sorted(s.values["Cardiomegaly"] == flipped for s in samples) == [False, True]


def test_undecodable_views_stop_or_leave_their_sample(tmp_path):
    """data.verify_images / data.on_bad_image: an undecodable view is named (error) or leaves its sample (warn);
    a sample without any decodable view is dropped; nothing is decoded when neither key asks for it."""
    from PIL import Image

    from cxrclip.data import Sample, check_sample_images
    from shared.data.images import ImageReadError

    good, broken, also_broken = (str(tmp_path / n) for n in ("good.png", "broken.png", "also_broken.png"))
    Image.new("L", (8, 8), 100).save(good)
    for path in (broken, also_broken):
        (tmp_path / path).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    samples = [Sample(images=[good, broken], sections=["a"]), Sample(images=[also_broken], sections=["b"])]
    assert check_sample_images(samples) == samples   # not asked: read (and named) when training reaches it
    with pytest.raises(ImageReadError, match=r"2 of 3 .*broken\.png.*data\.on_bad_image=warn"):
        check_sample_images(samples, verify=True)
    with pytest.warns(UserWarning, match="2 of 3 image files cannot be decoded"):
        kept = check_sample_images(samples, on_bad_image="warn")
    assert kept == [Sample(images=[good], sections=["a"])]
