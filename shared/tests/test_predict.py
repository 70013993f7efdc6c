"""shared.predict: the input checks, the crop window, the panels and the table every <method>.predict uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared import predict as common
from shared.data.images import load_image
from shared.tests.predict_contract import write_dicom


@pytest.mark.parametrize("name", ["00000001_000.png", "00000001_001.png", "00000001_002.png", "adnet_sample.png"])
def test_real_frontal_images_pass_every_check(real_images_dir, name):
    assert common.check_image(load_image(real_images_dir / name), real_images_dir / name, 224) == []


def test_inverted_normalised_small_and_lateral_images_are_flagged(real_images_dir, tmp_path):
    gray = load_image(real_images_dir / "00000001_000.png")
    only = lambda warnings: [w.split(" (")[0] for w in warnings]  # noqa: E731
    assert only(common.check_image(255 - gray, "x.png", 224)) == ["looks inverted"]
    assert only(common.check_image((gray > 128).astype(np.uint8) * 255, "x.png", 224)) == ["looks already normalised"]
    assert only(common.check_image(gray[::16, ::16], "x.png", 224)) == ["is far smaller"]
    assert only(common.check_image(gray, "patient_lateral.png", 224)) == ["looks like a lateral view"]
    assert common.check_image(gray, "patient_lateral.png", 224, expects_frontal=False) == []
    dcm = write_dicom(tmp_path / "lat.dcm", gray.astype(np.uint16) * 16, view_position="LL")
    assert only(common.check_image(gray, dcm, 224)) == ["looks like a lateral view"]


def test_crop_window_follows_the_test_transform():
    # shorter side (700) to 256, centre crop 224: all of the height but 224/366 of the width is seen
    x0, y0, x1, y1 = common.crop_window((700, 1000), 256, 224, squash=False)
    assert (y0, y1) == pytest.approx((0.5 - 224 / 512, 0.5 + 224 / 512))
    assert x1 - x0 == pytest.approx(224 / int(256 * 1000 / 700))
    assert common.crop_window((700, 1000), 256, 224, squash=True) == pytest.approx((1 / 16, 1 / 16, 15 / 16, 15 / 16))


def test_panels_keep_the_image_aspect_and_heat_stays_in_its_window(tmp_path):
    gray = np.full((300, 600), 100, np.uint8)
    size = common.panel_size(gray.shape)
    assert size == (256, 512)
    heat = common.heat_overlay(gray, np.ones((4, 4)), size, window=(0.25, 0.0, 0.75, 1.0))
    assert (heat[:, :120] == 100).all() and (heat[:, 136:376] != 100).any()     # coloured inside only
    path = common.write_panels(tmp_path / "p.png", [(common.gray_rgb(gray, size), "a"), (heat, "b")])
    assert Image.open(path).size == (1024, 256)
    with pytest.raises(ValueError, match="give equal sizes"):
        common.write_panels(tmp_path / "q.png", [(heat, "a"), (heat[:10], "b")])


def test_table_sorts_findings_and_turns_branch_dicts_into_columns():
    evidence = common.Evidence({"a": 0.2, "b": 0.9}, [], {"global": {"a": 0.1, "b": 0.3}, "tau": 0.7})
    record = common.result_record("img.png", "m", evidence, [], None)
    assert [f["finding"] for f in record["findings"]] == ["b", "a"]
    lines = common.format_table(record).splitlines()
    assert lines[1].split() == ["finding", "probability", "global"]
    assert lines[2].split() == ["b", "0.900", "0.300"] and lines[-1].strip() == "tau: 0.7"


def test_resolve_run_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        common.resolve_run(str(tmp_path), None, None)
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="give -cfg CONFIG"):
        common.resolve_run(None, str(tmp_path / "w.pt"), None)
    assert common.resolve_run(None, str(tmp_path / "w.pt"), "c.yaml").config.name == "c.yaml"


def test_unreadable_image_is_one_line_and_the_others_still_run(real_images_dir, tmp_path, capsys):
    seen = []
    predictor = common.Predictor("m", lambda g: seen.append(g.shape) or common.Evidence({"a": 0.5}, []), 224)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    records, status = common.run(predictor, [str(tmp_path / "missing.png"), str(tmp_path / "bad.png"),
                                             str(real_images_dir / "adnet_sample.png")], tmp_path, echo=lambda s: None)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(records) == 1 and seen == [(231, 231)]
    assert len(err) == 2 and "image file not found" in err[0] and "cannot decode image" in err[1]


def test_picture_path_opens_from_any_folder(real_images_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predictor = common.Predictor("m", lambda g: common.Evidence({"a": 0.5}, [(np.zeros((8, 8, 3), np.uint8), "x")]),
                                 224)
    records, _ = common.run(predictor, [str(real_images_dir / "adnet_sample.png")], "predictions", echo=lambda s: None)
    picture = records[0]["picture"]
    assert picture == str(tmp_path / "predictions" / "adnet_sample_m.png") and Path(picture).is_file()
