"""Image bytes -> uint8 numpy arrays, and FER2013 pixel strings -> 48x48 faces.

Every failure is an `ImageError` with a short machine `status` (the manifest's
status column) and a human `message`, so a stage can turn it into data.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_ray.config import COLORS
from fer_ray.schema import Status

# PIL's decompression-bomb guard is process-global and fires inside Image.open,
# before we can see the size: it would refuse (or warn about) images by its own
# fixed limit and without the WxH. `decode_image` reads the header and enforces
# the configurable `face.max_pixels` itself, before any pixel buffer exists, so the
# global guard is switched off here rather than letting it mask that check.
Image.MAX_IMAGE_PIXELS = None


class InputError(Exception):
    """A problem of one input, which becomes its status and error instead of stopping the
    job: `status` is a short code, `message` says what was wrong."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


class ImageError(InputError):
    """A per-image problem (an image that cannot be decoded, or is too large)."""


def decode_image(data: bytes, color: str = "rgb", max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode JPEG/PNG/TIFF/BMP/... bytes to uint8 (H,W,3) RGB or (H,W) grey.

    EXIF orientation is applied, alpha is composited on black, 16-bit and float
    images are scaled to 8 bits. Raises ImageError: empty_file, decode_error, too_large.
    """
    if color not in COLORS:
        raise ValueError(f"color: {color!r} is not valid; choose one of: {', '.join(COLORS)}")
    if not data:
        raise ImageError(Status.EMPTY_FILE, "file is empty (0 bytes)")
    image = _open_header(data)
    _check_size(image.size, max_pixels)
    image = _load_pixels(image)
    return _to_gray(image) if color == "gray" else _to_rgb(image)


def header_pixels(data: bytes) -> int:
    """Width x height from the image's header, without decoding it; 0 when there is no
    readable header (decode_image then says why)."""
    try:
        width, height = _open_header(data).size
    except ImageError:
        return 0
    return width * height


def _open_header(data: bytes) -> Image.Image:
    """Parse only the header: size and mode are known, no pixel buffer is allocated."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its message holds only a BytesIO repr
        raise ImageError(Status.DECODE_ERROR, "not a recognised image format") from None
    except Exception as err:  # PIL raises many types for unknown or corrupt headers
        raise ImageError(Status.DECODE_ERROR, f"not a readable image: {err}") from None


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(Status.TOO_LARGE, f"image is {width}x{height} = {width * height} pixels, "
                                      f"over the limit of {max_pixels} (face.max_pixels)")
    if width * height == 0:
        raise ImageError(Status.DECODE_ERROR, f"image has no pixels ({width}x{height})")


def _load_pixels(image: Image.Image) -> Image.Image:
    """Decode the pixels and apply EXIF orientation.

    `.load()` is explicit so a truncated file raises here (PIL's
    LOAD_TRUNCATED_IMAGES stays False) instead of yielding a half-grey image later.
    """
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except Exception as err:  # truncated data, bad Huffman tables, corrupt EXIF ...
        raise ImageError(Status.DECODE_ERROR, f"cannot decode image: {err}") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return _composite_on_black(np.asarray(image.convert("RGBA")))
    if _is_high_depth(image):
        gray = _high_depth_to_8bit(np.asarray(image))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "RGB":
        return np.array(image)  # one copy: convert() would copy first (36 MB for a 12 MP photo)
    return np.asarray(image.convert("RGB")).copy()


def _to_gray(image: Image.Image) -> np.ndarray:
    if _is_high_depth(image):
        return _high_depth_to_8bit(np.asarray(image))
    if image.mode == "L":
        return np.asarray(image).copy()
    rgb = _to_rgb(image)  # alpha handling first, then the same luma weights PIL uses
    return np.asarray(Image.fromarray(rgb).convert("L")).copy()


def _is_high_depth(image: Image.Image) -> bool:
    """16-bit and 32-bit grey modes (PIL reduces 16-bit colour to 8-bit RGB itself)."""
    return image.mode.startswith("I") or image.mode == "F"


def _high_depth_to_8bit(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit (0..65535) grey, or float grey in 0..1, to 0..255.

    PIL's 32-bit "I" mode is read as 16-bit too: that is what older PIL versions
    give for 16-bit PNGs, and 8-bit sources never arrive in it.
    """
    floats_in_unit_range = values.dtype.kind == "f" and values.max(initial=0) <= 1.0
    full_scale = 1.0 if floats_in_unit_range else 65535.0
    scaled = values.astype(np.float32) * np.float32(255.0 / full_scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    return ((rgba[:, :, :3] * alpha + 127) // 255).astype(np.uint8)


# ---------------------------------------------------------------- FER2013 pixel strings

def pixels_to_image(text: str, side: int = 48) -> np.ndarray:
    """A FER2013 `pixels` cell (side*side space-separated grey values) -> (side,side) uint8.

    Raises ImageError(Status.BAD_PIXELS, ...) naming the count, or the first bad value and
    its 0-based position.
    """
    expected = side * side
    values = _parse_integers(text)
    if values is None or values.size != expected:
        raise _pixel_error(text, expected)
    if values.size and (values.min() < 0 or values.max() > 255):
        position = int(np.flatnonzero((values < 0) | (values > 255))[0])
        raise ImageError(Status.BAD_PIXELS, f"value {values[position]} at position {position} "
                                       "is outside 0..255")
    return values.astype(np.uint8).reshape(side, side)


def _parse_integers(text: str) -> np.ndarray | None:
    """Fast C parse (about 5x faster than split + int); None if something is not an integer."""
    try:
        return np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:  # numpy >= 2.3; older versions stop early and the count is off
        return None


def _pixel_error(text: str, expected: int) -> ImageError:
    """Slow path, only for bad rows: find the first non-integer, else report the count."""
    tokens = text.split()
    for position, token in enumerate(tokens):
        try:
            int(token)
        except ValueError:
            kind = "non-integer" if _is_number(token) else "non-numeric"
            return ImageError(Status.BAD_PIXELS, f"{kind} value {token[:20]!r} at position {position}")
    side = int(round(expected ** 0.5))
    return ImageError(Status.BAD_PIXELS,
                      f"expected {expected} values ({side}x{side}), got {len(tokens)}")


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False
