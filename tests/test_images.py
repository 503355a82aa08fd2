"""Reference-image loading: formats, modes, orientation, cropping, and one clear error per bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dreamdist.utils.errors import InputError
from dreamdist.utils.images import (
    ReferenceImageWarning,
    check_reference_folder,
    list_image_files,
    load_reference_images,
    open_image,
)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_formats_and_modes(tmp_path):
    base = Image.new("RGB", (40, 30), (10, 120, 240))
    base.save(tmp_path / "a.jpg", quality=95)
    base.save(tmp_path / "b.png")
    base.save(tmp_path / "c.webp", lossless=True)
    base.save(tmp_path / "d.bmp")
    base.convert("L").save(tmp_path / "e_gray.png")
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "f_palette.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1junk")  # hidden files are skipped
    (tmp_path / "sub").mkdir()  # so are sub-folders
    paths = list_image_files(tmp_path)
    assert [p.name for p in paths] == ["a.jpg", "b.png", "c.webp", "d.bmp", "e_gray.png", "f_palette.png"]
    refs = load_reference_images(tmp_path, 16)
    assert refs.pixels.shape == (6, 3, 16, 16) and refs.pixels.dtype == torch.float32
    assert refs.pixels.min() >= -1 and refs.pixels.max() <= 1
    colour = torch.tensor([10, 120, 240]) / 127.5 - 1
    for i in range(4):  # the colour survives every format (jpg within compression error)
        assert torch.allclose(refs.pixels[i].mean(dim=(1, 2)), colour, atol=0.05)
    gray = refs.pixels[4]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert refs.with_flips().shape == (12, 3, 16, 16)


def test_animated_gif_and_multipage_tiff_give_their_first_frame(tmp_path):
    red, blue = Image.new("RGB", (24, 24), (230, 20, 20)), Image.new("RGB", (24, 24), (20, 20, 230))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    red.save(tmp_path / "pages.tiff", save_all=True, append_images=[blue])
    blue.save(tmp_path / "single.tif")
    assert [p.name for p in list_image_files(tmp_path)] == ["anim.gif", "pages.tiff", "single.tif"]
    for name, colour in (("anim.gif", (230, 20, 20)), ("pages.tiff", (230, 20, 20)), ("single.tif", (20, 20, 230))):
        pixels = _pixels(open_image(tmp_path / name)).reshape(-1, 3).mean(0)
        assert np.abs(pixels - np.array(colour)).max() <= 3, name
    assert load_reference_images(tmp_path, 16).pixels.shape == (3, 3, 16, 16)


def test_transparency_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red: must become white
    ImageDraw.Draw(rgba).rectangle((0, 0, 9, 19), fill=(0, 0, 255, 255))  # opaque blue left half
    rgba.save(tmp_path / "x.png")
    image = open_image(tmp_path / "x.png")
    assert image.mode == "RGB"
    px = _pixels(image)
    assert tuple(px[10, 15]) == (255, 255, 255)
    assert tuple(px[10, 3]) == (0, 0, 255)
    la = Image.new("LA", (8, 8), (0, 0))
    la.save(tmp_path / "la.png")
    assert tuple(_pixels(open_image(tmp_path / "la.png"))[0, 0]) == (255, 255, 255)
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(tmp_path / "pal.png", transparency=0)
    assert tuple(_pixels(open_image(tmp_path / "pal.png"))[0, 0]) == (255, 255, 255)


def test_sixteen_bit_grayscale(tmp_path):
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 0
    Image.fromarray(array).save(tmp_path / "g16.png")
    px = _pixels(open_image(tmp_path / "g16.png"))
    assert tuple(px[0, 6]) == (255, 255, 255) and tuple(px[0, 1]) == (0, 0, 0)


def test_exif_orientation_honoured(tmp_path):
    # stored 40 wide x 20 high, red on the left; orientation 6 = "rotate 90 CW to display"
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 9, 19), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    upright = open_image(tmp_path / "rot.jpg")
    assert upright.size == (20, 40)  # portrait once rotated
    px = _pixels(upright)
    assert px[2, 10, 0] > 200 and px[2, 10, 2] < 60  # the red band is now on top
    assert px[37, 10, 2] > 200


def test_resize_and_centre_crop(tmp_path):
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((20, 0, 39, 19), fill=(255, 255, 255))  # white centre third
    image.save(tmp_path / "wide.png")
    with pytest.warns(ReferenceImageWarning, match="only one"):
        refs = load_reference_images(tmp_path, 16)
    assert refs.pixels.shape == (1, 3, 16, 16)
    # the crop keeps the centre 20x20 square, which is all white
    assert refs.pixels.min() > 0.9


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no reference images found"):
        check_reference_folder(tmp_path)


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        check_reference_folder(tmp_path / "nope")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_reference_folder(tmp_path / "a.png")


def test_non_image_file(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt.*not an image file"):
        check_reference_folder(tmp_path)


def test_corrupt_image(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(InputError, match=r"broken\.jpg: not a readable image"):
        check_reference_folder(tmp_path)


def test_truncated_image(tmp_path):
    Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"t\.png: (corrupt or truncated|not a readable)"):
        check_reference_folder(tmp_path)


def test_single_image_warns(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "only.png")
    with pytest.warns(ReferenceImageWarning, match="only one reference image"):
        paths = check_reference_folder(tmp_path)
    assert len(paths) == 1


def test_small_image_warns(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "b.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_reference_images(tmp_path, 32)
    messages = [str(w.message) for w in caught if issubclass(w.category, ReferenceImageWarning)]
    assert len(messages) == 1 and "a.png (8x8)" in messages[0] and "b.png" not in messages[0]
