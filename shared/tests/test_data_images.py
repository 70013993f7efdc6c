"""shared.data.images: the real fixture images and generated 16-bit, RGBA, EXIF-rotated JPEG and DICOM files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.data.images import ImageReadError, load_image, to_rgb, to_uint8, verify_images
from shared.tests.predict_contract import write_dicom


def test_real_nih_pngs(real_images_dir):
    for name in ("00000001_000.png", "00000001_001.png", "00000001_002.png"):
        arr = load_image(real_images_dir / name)
        assert arr.shape == (1024, 1024) and arr.dtype == np.uint8
        assert arr.min() <= 5 and arr.max() >= 250 and 60 < arr.mean() < 200
        # 8-bit grayscale is returned exactly as stored
        np.testing.assert_array_equal(arr, np.asarray(Image.open(real_images_dir / name)))


def test_real_rgba_sample(real_images_dir):
    path = real_images_dir / "adnet_sample.png"
    rgba = np.asarray(Image.open(path))
    arr = load_image(path)
    assert arr.shape == (231, 231) and arr.dtype == np.uint8
    transparent = rgba[..., 3] == 0
    assert transparent.any() and (arr[transparent] == 0).all()          # composited over black
    opaque = rgba[..., 3] == 255
    np.testing.assert_array_equal(arr[opaque], rgba[..., 0][opaque])    # gray RGB -> same value


def test_16bit_png(tmp_path):
    data = np.linspace(1000, 4095, 32 * 48).reshape(32, 48).astype(np.uint16)   # 12-bit data in 16 bits
    Image.fromarray(data).save(tmp_path / "a.png")
    arr = load_image(tmp_path / "a.png")
    assert arr.shape == (32, 48) and arr.dtype == np.uint8 and arr.min() == 0 and arr.max() == 255
    assert (np.diff(arr.astype(int), axis=1) >= 0).all()
    shifted = load_image(tmp_path / "a.png", high_bit_depth="shift")
    assert shifted.max() == 4095 >> 8
    eight = np.arange(10, 210, dtype=np.uint16).reshape(10, 20)
    Image.fromarray(eight * 257).save(tmp_path / "b.png")           # 8-bit data widened to 16 bits
    np.testing.assert_array_equal(load_image(tmp_path / "b.png"), eight)


def test_rgb_and_generated_rgba(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert (load_image(tmp_path / "rgb.png") == round(200 * 0.299)).all()
    rgba = np.full((8, 8, 4), 100, np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    arr = load_image(tmp_path / "rgba.png")
    assert arr[0, 0] == 0 and (arr.ravel()[1:] == 100).all()


def test_exif_rotated_jpeg(tmp_path):
    data = np.zeros((20, 40), np.uint8)
    data[:, :10] = 255                                  # bright band on the left of the stored pixels
    img = Image.fromarray(data)
    exif = img.getexif()
    exif[0x0112] = 6                                    # orientation: rotate 90 CW to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    arr = load_image(tmp_path / "r.jpg")
    assert arr.shape == (40, 20)                        # displayed upright: portrait
    assert arr[:10].mean() > 200 and arr[-10:].mean() < 50   # left band is now on top


def test_dicom_monochrome1_and_luts(tmp_path):
    pixels = np.tile(np.linspace(0, 4000, 16), (10, 1)).astype(np.uint16)
    write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", slope=2.0, intercept=-100.0)
    arr = load_image(tmp_path / "m1.dcm")
    assert arr.shape == (10, 16) and arr.dtype == np.uint8
    assert arr[0, 0] == 255 and arr[0, -1] == 0                 # MONOCHROME1: low value = bright
    assert (np.diff(arr[0].astype(int)) <= 0).all()
    # a VOI window clips: everything above center + width/2 is saturated
    write_dicom(tmp_path / "w.dcm", pixels, window=(1000, 1000))
    windowed = load_image(tmp_path / "w.dcm")
    assert windowed[0, 0] == 0 and windowed[0, -1] == 255
    assert (windowed[0] == 255).sum() > 8                        # values >= 1500 all saturate
    # no .dcm suffix: detected by the DICM preamble
    (tmp_path / "noext").write_bytes((tmp_path / "m1.dcm").read_bytes())
    np.testing.assert_array_equal(load_image(tmp_path / "noext"), arr)



def test_dicom_window_sets_the_grey_levels_not_the_image_range(tmp_path):
    pixels = np.tile(np.linspace(1000, 2000, 64), (4, 1)).astype(np.uint16)   # 12-bit data in a narrow band
    # a window wider than the content: the content stays mid-grey (1000/4095 .. 2000/4095 of white)
    write_dicom(tmp_path / "wide.dcm", pixels, window=(2048, 4096))
    wide = load_image(tmp_path / "wide.dcm")
    assert abs(int(wide[0, 0]) - 62) <= 1 and abs(int(wide[0, -1]) - 125) <= 1
    assert (np.diff(wide[0].astype(int)) >= 0).all()
    write_dicom(tmp_path / "wide1.dcm", pixels, photometric="MONOCHROME1", window=(2048, 4096))
    np.testing.assert_array_equal(load_image(tmp_path / "wide1.dcm"), 255 - wide)   # inverted in the same range
    # a narrow window saturates both ends; the centre is mid-grey
    write_dicom(tmp_path / "narrow.dcm", pixels, window=(1500, 200))
    narrow = load_image(tmp_path / "narrow.dcm")
    assert narrow[0, 0] == 0 and narrow[0, -1] == 255
    inside = (pixels[0] > 1400) & (pixels[0] < 1600)   # DICOM LINEAR: ((x - (c - 0.5)) / (w - 1) + 0.5)
    expected = np.clip(((pixels[0, inside] - 1499.5) / 199 + 0.5), 0, 1) * 255
    assert inside.sum() > 5 and np.abs(narrow[0, inside] - expected).max() <= 1
    # no window, no VOI LUT: the image's own min..max is stretched to 0..255
    write_dicom(tmp_path / "none.dcm", pixels)
    plain = load_image(tmp_path / "none.dcm")
    assert plain[0, 0] == 0 and plain[0, -1] == 255
    # a VOI LUT sequence: its output range (0..max entry) is black..white, whatever the image covers
    entries = np.linspace(0, 4095, 4096).astype(int)
    entries[:1500] = 1000                                # a LUT whose output starts at 1000, not 0
    write_dicom(tmp_path / "lut.dcm", pixels, lut=(0, 12, entries))
    lut = load_image(tmp_path / "lut.dcm")
    assert lut[0, 0] == 0 and lut[0, -1] == 255 - round(255 * (4095 - 2000) / (4095 - 1000))

def test_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ImageReadError, match=r"1 of 2 .*broken.png"):
        verify_images([tmp_path / "ok.png", tmp_path / "broken.png"])
    with pytest.warns(UserWarning):
        assert verify_images([tmp_path / "ok.png", tmp_path / "broken.png"], on_error="warn") == [
            str(tmp_path / "broken.png")]


def test_to_rgb_and_to_uint8():
    img = to_rgb(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert img.mode == "RGB" and img.size == (4, 3)
    assert np.asarray(img)[..., 2].tolist() == np.arange(12).reshape(3, 4).tolist()
    assert to_uint8(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError):
        to_rgb(np.zeros((2, 2, 4), np.uint8))


def test_verify_decodes_fully_and_check_frame_images_skips_or_names(tmp_path):
    """A PNG cut in its pixel data passes a header check but not a decode: verification finds it; "warn" drops
    and counts its row, "error" names it; without verification the frame is untouched (read-time error)."""
    import pandas as pd
    from shared.data.images import check_frame_images
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / name)
    cut = tmp_path / "b.png"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    frame = pd.DataFrame({"path": [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")], "x": [1, 2, 3]})
    assert check_frame_images(frame) is frame
    with pytest.raises(ImageReadError, match=r"1 of 3 .*b\.png.*data.on_bad_image=warn"):
        check_frame_images(frame, verify=True)
    with pytest.warns(UserWarning, match="1 of 3"):
        kept = check_frame_images(frame, on_bad_image="warn")
    assert kept["x"].tolist() == [1, 3] and kept.attrs["skipped_bad_images"] == 1
    with pytest.raises(ValueError, match="on_bad_image"):
        check_frame_images(frame, on_bad_image="skip")
