"""decode_image and pixels_to_image: formats, modes, orientation, and every failure status."""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from fer_ray.vision.decode import ImageError, decode_image, header_pixels, pixels_to_image


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB but holds one tiny IDAT chunk.

    If a decoder allocated and decoded the pixels, it would fail with a truncation
    error; only a header-level size check can answer `too_large`.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def status_of(data: bytes, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as caught:
        decode_image(data, **kwargs)
    return caught.value


# ------------------------------------------------------------------ formats and modes

def test_jpeg_decodes_to_rgb_and_gray(astronaut):
    data = encode(astronaut, "JPEG", quality=95)
    rgb = decode_image(data)
    gray = decode_image(data, color="gray")
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert gray.shape == (512, 512) and gray.dtype == np.uint8
    assert np.abs(rgb.astype(int) - astronaut).mean() < 4  # it is the same picture
    expected_gray = np.asarray(Image.fromarray(astronaut).convert("L"), np.int16)
    assert np.abs(gray.astype(np.int16) - expected_gray).mean() < 4


def test_png_is_lossless(astronaut):
    np.testing.assert_array_equal(decode_image(encode(astronaut, "PNG")), astronaut)


def test_grey_tiff_and_bmp(astronaut):
    gray = astronaut[:, :, 1].copy()
    for fmt in ("TIFF", "BMP"):
        data = encode(gray, fmt)
        np.testing.assert_array_equal(decode_image(data, color="gray"), gray)
        rgb = decode_image(data)
        assert rgb.shape == (512, 512, 3)
        np.testing.assert_array_equal(rgb[:, :, 0], gray)


def test_rgb_bmp(astronaut):
    np.testing.assert_array_equal(decode_image(encode(astronaut, "BMP")), astronaut)


def test_rgba_is_composited_on_black():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :3, 3] = 255  # opaque left half
    rgba[:, 3:, 3] = 0  # transparent right half
    rgb = decode_image(encode(rgba, "PNG"))
    assert rgb.shape == (4, 6, 3)
    assert (rgb[:, :3] == (200, 100, 50)).all()
    assert (rgb[:, 3:] == 0).all()


def test_palette_png(astronaut):
    palette_image = Image.fromarray(astronaut).convert("P")
    rgb = decode_image(encode(palette_image, "PNG"))
    assert rgb.shape == (512, 512, 3)
    np.testing.assert_array_equal(rgb, np.asarray(palette_image.convert("RGB")))


def test_16bit_grey_png_is_scaled_to_8bit():
    ramp = (np.arange(256 * 4, dtype=np.uint32).reshape(4, 256) * 64).astype(np.uint16)
    gray = decode_image(encode(ramp, "PNG"), color="gray")
    assert gray.dtype == np.uint8
    np.testing.assert_allclose(gray, ramp / 257.0, atol=0.51)  # 65535 -> 255, not clipped
    assert decode_image(encode(ramp, "TIFF")).shape == (4, 256, 3)


def test_16bit_colour_png_is_scaled_to_8bit():
    import cv2
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 0  # R, G, B
    ok, buffer = cv2.imencode(".png", rgb16[..., ::-1])  # OpenCV writes 16-bit colour PNGs
    assert ok
    rgb = decode_image(buffer.tobytes())
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 128, 0)


def test_exif_orientation_6_is_applied():
    """Orientation 6 = stored image must be turned 90 degrees clockwise for display."""
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert rgb.shape == (40, 20, 3)  # transposed
    assert rgb[5, 10, 0] > 200 and rgb[5, 10, 2] < 60  # the left (red) half is now on top
    assert rgb[35, 10, 2] > 200 and rgb[35, 10, 0] < 60


# ------------------------------------------------------------------ failures

def test_zero_bytes_is_empty_file():
    error = status_of(b"")
    assert error.status == "empty_file"
    assert str(error) == error.message


def test_random_bytes_are_a_decode_error():
    error = status_of(np.random.default_rng(0).bytes(4096))
    assert error.status == "decode_error"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_jpeg_is_a_decode_error(astronaut, keep):
    data = encode(astronaut, "JPEG", quality=90)
    assert status_of(data[:int(len(data) * keep)]).status == "decode_error"


def test_huge_header_is_refused_before_decoding():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not fire either
        error = status_of(png_claiming(30000, 30000))
    assert error.status == "too_large"
    assert "30000x30000" in error.message and "40000000" in error.message


def test_size_limit_is_ours_not_pils():
    """Our configurable limit answers on both sides of PIL's own (89 Mpx) guard."""
    assert status_of(png_claiming(2000, 1000), max_pixels=1_000_000).status == "too_large"
    # 120 Mpx is over PIL's warning limit: with our higher limit it is allowed through
    # to decoding, where the missing data (not a size guard) is what fails.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error = status_of(png_claiming(12000, 10000), max_pixels=200_000_000)
    assert error.status == "decode_error"


def test_same_header_within_limit_reaches_decoding():
    """The control for the two tests above: a small claimed size is decoded and fails."""
    assert status_of(png_claiming(300, 200)).status == "decode_error"


def test_header_pixels_reads_the_size_without_decoding():
    assert header_pixels(png_claiming(30000, 20000)) == 600_000_000  # no pixels behind the header
    assert header_pixels(encode(np.zeros((30, 40), np.uint8), "JPEG")) == 1200
    assert header_pixels(b"not an image") == 0 and header_pixels(b"") == 0


def test_unknown_color_is_a_value_error(astronaut):
    with pytest.raises(ValueError, match="gray"):
        decode_image(encode(astronaut, "PNG"), color="bgr")


# ------------------------------------------------------------------ FER2013 pixel strings

def test_pixels_round_trip():
    values = (np.arange(2304) * 7) % 256
    image = pixels_to_image(" ".join(map(str, values)))
    assert image.shape == (48, 48) and image.dtype == np.uint8
    np.testing.assert_array_equal(image.ravel(), values)


def test_pixels_tolerate_extra_whitespace():
    text = "  " + "  ".join(["12"] * 2304) + "\n"
    assert (pixels_to_image(text) == 12).all()


def test_pixels_wrong_count():
    with pytest.raises(ImageError) as caught:
        pixels_to_image(" ".join(["1"] * 2000))
    assert caught.value.status == "bad_pixels"
    assert caught.value.message == "expected 2304 values (48x48), got 2000"


def test_pixels_non_numeric():
    tokens = ["1"] * 2304
    tokens[17] = "abc"
    with pytest.raises(ImageError) as caught:
        pixels_to_image(" ".join(tokens))
    assert caught.value.status == "bad_pixels"
    assert caught.value.message == "non-numeric value 'abc' at position 17"


@pytest.mark.parametrize("bad", ["256", "-1", "1.5"])
def test_pixels_out_of_range_or_fractional(bad):
    tokens = ["0"] * 2304
    tokens[100] = bad
    with pytest.raises(ImageError) as caught:
        pixels_to_image(" ".join(tokens))
    assert caught.value.status == "bad_pixels"
    assert f"{bad!r}" in caught.value.message or f" {bad} " in caught.value.message
    assert "position 100" in caught.value.message


def test_pixels_other_side():
    assert pixels_to_image(" ".join(["5"] * 100), side=10).shape == (10, 10)
