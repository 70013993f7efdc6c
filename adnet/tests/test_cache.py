"""ADNet reads a `prepare --cache` folder of its data root without decoding the images."""
from shared.config import load_config
from shared.data import synthetic
from shared.data.prepare import prepare

from adnet.config import ADNetConfig
from adnet.data import build_frame, eval_transform, make_dataset

DEMO = "adnet/configs/demo.yaml"


def test_prepared_cache_is_read_instead_of_the_image_files(tmp_path):
    raw = synthetic.generate("nih", tmp_path / "nih", n=24, size=96, seed=0)
    prepared = tmp_path / "nih64"
    prepare("nih", raw, prepared, size=64, mode="square", cache=True, progress=False)
    cfg = load_config(ADNetConfig, DEMO, [f"data.nih_root={prepared}", "data.test_size=64"])
    frame, labels = build_frame(cfg.data)
    off = load_config(ADNetConfig, DEMO, [f"data.nih_root={prepared}", "data.use_cache=false"])
    off_frame, _ = build_frame(off.data)
    assert make_dataset(off_frame, "test", labels, eval_transform(off.data)).cache is None
    for image in (prepared / "images").glob("*.png"):       # only the cache is left to read from
        image.unlink()
    ds = make_dataset(frame, "test", labels, eval_transform(cfg.data))
    assert ds[0]["image"].shape == (3, 64, 64)
