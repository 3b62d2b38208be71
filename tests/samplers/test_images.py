"""samplers.app.images on every odd input: not an image, truncated, palette, RGBA, 16-bit,
grayscale, EXIF rotation, decompression bombs and big photos; masks; grids and GIFs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from samplers.app import images as I


def png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_same_result_from_path_bytes_pil_and_array(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    sources = [
        tmp_path / "a.png",
        str(tmp_path / "a.png"),
        (tmp_path / "a.png").read_bytes(),
        Image.fromarray(rgb),
        rgb,
        io.BytesIO((tmp_path / "a.png").read_bytes()),
    ]
    out = [I.load_image(s, 32) for s in sources]
    assert out[0].shape == (1, 3, 32, 32) and -1 <= out[0].min() and out[0].max() <= 1
    for x in out[1:]:
        torch.testing.assert_close(x, out[0])


def test_matches_the_course_process_pil_im():
    """Resize(64) -> CenterCrop(64) -> ToTensor -> Normalize(0.5, 0.5), as the course's starter."""
    import torchvision.transforms as T

    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    course = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize(0.5, 0.5)])
    torch.testing.assert_close(I.load_image(img, 64), course(img).unsqueeze(0))


def test_not_an_image_truncated_and_missing(tmp_path):
    with pytest.raises(I.ImageLoadError, match="not an image file"):
        I.load_image(b"%PDF-1.4 definitely not a picture", 32)
    good = png_bytes(Image.new("RGB", (64, 64), "red"))
    with pytest.raises(I.ImageLoadError, match="truncated or corrupt"):
        I.load_image(good[: len(good) // 2], 32)
    with pytest.raises(I.ImageLoadError, match="no such image file"):
        I.load_image(tmp_path / "nothing.png", 32)
    assert issubclass(I.ImageLoadError, ValueError)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        I.load_image(good, 32, channels=2)


def test_palette_and_rgba_transparency_over_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 1
    x = I.load_image(png_bytes(pal, transparency=1), 8)
    torch.testing.assert_close(x[0, :, 0, 0], torch.ones(3))  # transparent -> white
    torch.testing.assert_close(x[0, :, 4, 4], torch.tensor([1.0, -1.0, -1.0]))  # red
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (0, 255, 0, 255)
    x = I.load_image(Image.fromarray(rgba, "RGBA"), 8)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))
    torch.testing.assert_close(x[0, :, 0, 7], torch.ones(3))
    x = I.load_image(Image.fromarray(rgba, "RGBA"), 8, background=(0, 0, 0))
    torch.testing.assert_close(x[0, :, 0, 7], -torch.ones(3))


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.full((8, 8), 65535, np.uint16)
    arr[:, 4:] = 32896  # ~ 128/255 of full scale
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    x = I.load_image(png_bytes(img), 8, channels=1)
    assert x.shape == (1, 1, 8, 8)
    assert x[0, 0, 0, 0] == 1.0 and abs(float(x[0, 0, 0, 7])) < 0.01


def test_grayscale_to_rgb_and_rgb_to_grayscale():
    gray = Image.new("L", (10, 10), 255)
    x = I.load_image(gray, 10)
    assert x.shape == (1, 3, 10, 10) and torch.all(x == 1)
    y = I.load_image(Image.new("RGB", (10, 10), (255, 255, 255)), 10, channels=1)
    assert y.shape == (1, 1, 10, 10) and torch.all(y == 1)


def test_exif_rotation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 20:] = 255  # left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif, quality=95)
    img = I.open_image(buf.getvalue())
    assert img.size == (20, 40)  # now portrait
    pixels = np.asarray(img.convert("L"))
    assert pixels[:15].mean() < 30 and pixels[25:].mean() > 225  # left half is now on top


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds (almost) no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused():
    with pytest.raises(I.ImageLoadError, match="too large to load safely"):
        I.load_image(_png_header_only(100_000, 100_000), 64)
    with pytest.raises(I.ImageLoadError, match="too large"):  # over the limit, under PIL's 2x error
        I.load_image(_png_header_only(10_000, 10_000), 64)


def test_big_photo_is_downscaled_while_decoding():
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (255, 0, 0)).save(buf, format="JPEG", quality=90)
    img = I.open_image(buf.getvalue(), min_side=64)
    assert 64 <= min(img.size) < 3000 // 4
    x = I.load_image(buf.getvalue(), 64)
    assert x.shape == (1, 3, 64, 64)
    red = torch.tensor([1.0, -1.0, -1.0])
    torch.testing.assert_close(x.mean((0, 2, 3)), red, atol=0.02, rtol=0)


def test_masks_from_alpha_and_from_brightness():
    canvas = np.zeros((16, 16, 4), np.uint8)  # a browser canvas: painted strokes are opaque
    canvas[4:8, 2:10] = (255, 255, 255, 255)
    m = I.load_mask(canvas, 16)
    assert m.shape == (1, 1, 16, 16) and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[0, 0, 4:8, 2:10].all() and m.sum() == 32
    bw = np.zeros((16, 16), np.uint8)
    bw[:, 8:] = 255
    m = I.load_mask(png_bytes(Image.fromarray(bw)), 8)
    assert m.shape == (1, 1, 8, 8) and m[..., 4:].all() and not m[..., :4].any()
    # an editor's export: RGBA, opaque everywhere, white on black: brightness, not alpha
    opaque = np.stack([bw, bw, bw, np.full_like(bw, 255)], -1)
    assert torch.equal(I.load_mask(png_bytes(Image.fromarray(opaque, "RGBA")), 8), m)


def test_tensors_back_to_uint8_and_pil():
    arr = np.random.default_rng(2).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    x = I.load_image(arr, 12)
    np.testing.assert_array_equal(I.to_uint8(x)[0], arr)
    assert I.to_uint8(x[0]).shape == (1, 12, 12, 3)
    pils = I.to_pil(torch.zeros(2, 1, 5, 5))
    assert len(pils) == 2 and pils[0].mode == "L" and pils[0].getpixel((0, 0)) == 128


def test_figure_grid_and_gif(tmp_path):
    rows = [torch.zeros(3, 1, 28, 28), torch.ones(2, 3, 64, 64)]
    fig = I.figure(rows, row_labels=["mnist", "if"], col_labels=["a", "b", "c"])
    assert fig.mode == "RGB" and fig.width > 3 * 128 and fig.height > 2 * 128
    with pytest.raises(ValueError, match="at least one row"):
        I.figure([])
    path = I.save_gif([torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)], tmp_path / "chain.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 2


def test_example_images():
    ex = I.example_images(64)
    assert list(ex) == ["astronaut", "cat", "coffee", "rocket", "sketch"]
    for x in ex.values():
        assert x.shape == (1, 3, 64, 64) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    assert I.example_images(28, channels=1)["cat"].shape == (1, 1, 28, 28)


def test_grid_enlarges_pixel_exact_and_encodes(tmp_path):
    x = torch.tensor([[[[-1.0, 1.0], [1.0, -1.0]]]]).repeat(3, 1, 1, 1)  # 2x2 checkerboards
    g = I.grid(x, nrow=2, min_side=5)  # scale 3: 6 px tiles, 6 px black gaps
    assert g.shape == (2 * 6 + 3 * 6, 2 * 6 + 3 * 6, 3) and g.dtype == np.uint8
    assert (g[:6, :6] == 0).all() and (g[6:9, 6:9] == 0).all() and (g[6:9, 9:12] == 255).all()
    assert (I.grid(x, 1, pad_value=0.0)[0, 0] == 128).all()
    with Image.open(io.BytesIO(I.png_bytes(g))) as im:
        assert np.array_equal(np.asarray(im), g)
    frames = [np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)]
    with Image.open(io.BytesIO(I.gif_bytes(frames, duration_ms=30, hold_ms=500))) as im:
        assert im.n_frames == 2 and im.info["duration"] == 30 and im.size == (4, 4)
        im.seek(1)
        assert im.info["duration"] == 500
    with pytest.raises(ValueError, match="at least one frame"):
        I.gif_bytes([])
