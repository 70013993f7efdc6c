"""AG-CNN reads a `prepare --cache` folder of its data root without decoding the images."""
from pathlib import Path

from shared.config import load_config
from shared.data import synthetic
from shared.data.prepare import prepare

from agcnn.config import Config
from agcnn.data import datasets

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_prepared_cache_is_read_instead_of_the_image_files(tmp_path):
    raw = synthetic.generate("nih", tmp_path / "nih", n=24, size=96, seed=0)
    prepared = tmp_path / "nih64"
    prepare("nih", raw, prepared, size=64, mode="square", cache=True, progress=False)
    overrides = [f"data.root={prepared}", "data.split=official"]
    assert datasets(load_config(Config, DEMO, overrides + ["data.use_cache=false"]))["test"].cache is None
    sets = datasets(load_config(Config, DEMO, overrides))
    for image in (prepared / "images").glob("*.png"):       # only the cache is left to read from
        image.unlink()
    assert sets["test"][0]["image"].shape[0] == 3
