"""shared.data.prepare: same layout read by the same reader, clean 8-bit images, resumable, optional cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shared.data import synthetic
from shared.data.prepare import main, prepare


@pytest.fixture(scope="module")
def nih_twin(tmp_path_factory):
    return synthetic.generate("nih", tmp_path_factory.mktemp("p") / "nih", n=12, size=64, seed=4)


def test_same_layout_same_reader_and_resumable(nih_twin, tmp_path):
    from shared.data import nih
    out = tmp_path / "nih32"
    counts = prepare("nih", nih_twin, out, size=32, mode="square", workers=2, progress=False)
    assert counts["images"] == 12 and counts["written"] == 12 and counts["copied"] >= 4
    a, b = nih.read_index(nih_twin), nih.read_index(out)
    cols = ["image_id", "patient_id", "split"] + a.attrs["label_columns"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert (out / "BBox_List_2017.csv").read_bytes() == (nih_twin / "BBox_List_2017.csv").read_bytes()
    for p in b["path"]:
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (32, 32)   # RGBA / 16-bit inputs come out clean 8-bit
    sizes = pd.read_csv(out / "prepare_sizes.csv")
    assert len(sizes) == 12 and set(sizes["height"]) == {32} and 80 in set(sizes["orig_height"])
    # a second run does no work and touches nothing
    mtimes = {p: os.stat(p).st_mtime_ns for p in b["path"]}
    again = prepare("nih", nih_twin, out, size=32, mode="square", workers=2, progress=False)
    assert again["written"] == 0 and again["skipped"] == 12 and again["copied"] == 0
    assert mtimes == {p: os.stat(p).st_mtime_ns for p in b["path"]}
    # a killed run: one output missing, one half-written temp file left behind -> only that one is redone
    os.remove(b["path"][5])
    (out / "sizes_stale").unlink(missing_ok=True)
    os.remove(out / "prepare_sizes.csv")
    third = prepare("nih", nih_twin, out, size=32, mode="square", workers=1, progress=False)
    assert third["written"] == 1 and third["skipped"] == 11
    # another size means new work
    assert prepare("nih", nih_twin, out, size=24, mode="square", workers=1, progress=False)["written"] == 12


def test_shorter_mode_keeps_aspect_and_never_upscales(nih_twin, tmp_path):
    prepare("nih", nih_twin, tmp_path / "s", size=32, mode="shorter", workers=1, progress=False)
    messy = json.loads((nih_twin / "messy.json").read_text())
    with Image.open(tmp_path / "s" / messy["nonsquare"]) as im:
        assert im.size == (32, 40)
    prepare("nih", nih_twin, tmp_path / "big", size=128, mode="shorter", workers=1, progress=False)
    with Image.open(tmp_path / "big" / messy["rgba"]) as im:
        assert im.size == (64, 64) and im.mode == "L"


def test_cache_keyed_by_reader_ids_and_cli(nih_twin, tmp_path):
    from shared.data import nih
    from shared.data.cache import ImageCache
    from shared.data.images import load_image
    main(["--dataset", "nih", "--root", str(nih_twin), "--out", str(tmp_path / "o"), "--size", "32",
          "--mode", "square", "--cache", "--workers", "1", "--no-progress"])
    frame = nih.read_index(tmp_path / "o")
    cache = ImageCache.open(tmp_path / "o" / "cache")
    for row in frame.itertuples():
        assert np.array_equal(cache.get(row.image_id), load_image(row.path))



def test_cache_follows_a_new_size_or_mode_that_rewrites_no_image(nih_twin, tmp_path):
    import shutil
    from shared.data import nih
    from shared.data.cache import ImageCache
    root, out = tmp_path / "root", tmp_path / "o"
    shutil.copytree(nih_twin, root)
    messy = json.loads((root / "messy.json").read_text())
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(root / messy["nonsquare"])  # every image 64 x 64 now
    args = ["--dataset", "nih", "--root", str(root), "--out", str(out), "--cache", "--workers", "1", "--no-progress"]
    main(args + ["--size", "64", "--mode", "shorter"])
    assert ImageCache.open(out / "cache").mode == "shorter"
    # square at 64 and shorter at 128 leave every prepared 64 x 64 image valid: nothing is rewritten ...
    for size, mode in [("64", "square"), ("128", "shorter")]:
        counts = prepare("nih", root, out, size=int(size), mode=mode, cache=True, workers=1, progress=False)
        assert counts["written"] == 0
        cache = ImageCache.open(out / "cache")   # ... yet the cache is rebuilt for the new request
        assert (cache.size, cache.mode) == (int(size), mode)
        main(args + ["--size", size, "--mode", mode])   # the CLI re-run reuses it
        assert ImageCache.open(out / "cache").meta == cache.meta
    assert cache.get(nih.read_index(out).image_id[0]).shape == (64, 64)

def test_mimic_jpeg_exif_and_reports(tmp_path):
    root = synthetic.generate("mimic", tmp_path / "m", n=8, size=64, seed=1)
    out = tmp_path / "m32"
    prepare("mimic", root, out, size=32, mode="square", workers=1, progress=False)
    messy = json.loads((root / "messy.json").read_text())
    with Image.open(out / messy["exif"]) as im:
        assert im.format == "JPEG" and im.getexif().get(0x0112) is None and im.size == (32, 32)
    reports = sorted(p.relative_to(root) for p in (root / "files").rglob("*.txt"))
    assert reports and all((out / r).read_text() == (root / r).read_text() for r in reports)
    for name in ("chexpert", "negbio", "split", "metadata"):
        assert (out / f"mimic-cxr-2.0.0-{name}.csv").is_file()
    with pytest.raises(ValueError, match="must differ"):
        prepare("mimic", root, root, size=32)


def test_verify_lists_undecodable_images_in_one_line(tmp_path, capsys):
    """`prepare --verify` decodes every listed image; a truncated one is one error line naming it, exit 2."""
    from shared.cli import run_cli
    from shared.data.prepare import main
    from shared.data.synthetic import generate
    root = generate("nih", tmp_path / "nih", n=12, size=32, seed=0)
    argv = ["--dataset", "nih", "--root", str(root), "--verify", "--workers", "2", "--no-progress"]
    assert run_cli("python -m shared.data.prepare", lambda: main(argv)) == 0
    assert "all 12 images" in capsys.readouterr().out
    victim = sorted((root / "images").glob("*.png"))[4]
    victim.write_bytes(victim.read_bytes()[:60])
    assert run_cli("python -m shared.data.prepare", lambda: main(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and victim.name in err[0]
    assert err[0].startswith("python -m shared.data.prepare: error: 1 of 12")
