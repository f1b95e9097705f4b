"""Tiny test videos made with PyAV, each frame carrying its sequence number.

Frame n shows a grey texture that moves with n (so encoders make real P- and B-frames)
under a top band of 8 blocks, block j white when bit j of n is set (left to right).
`number_in` reads n back from a decoded frame: it survives compression, so a test can
tell which source frame a decoded frame is, and whether the picture is the right way up.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 64, 48
BITS = 8


def pattern(number: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8 RGB: frame `number` as drawn into the test videos."""
    columns = np.arange(width)[None, :] + 3 * number
    rows = np.arange(height)[:, None]
    texture = (90 + 50 * np.sin(columns / 5.0) + 30 * np.cos(rows / 4.0 + number / 3.0)).astype(np.uint8)
    image = np.repeat(texture[:, :, None], 3, axis=2)
    image[..., 2] = 255 - image[..., 2]  # a colour cast, so RGB order is tested too
    block = width // BITS
    for bit in range(BITS):
        image[: height // 4, bit * block:(bit + 1) * block] = 255 if number >> bit & 1 else 0
    return image


def number_in(image: np.ndarray) -> int:
    """The frame number drawn by `pattern`, read from a decoded (unrotated) frame."""
    gray = image.mean(axis=2) if image.ndim == 3 else image
    height, width = gray.shape
    block = width // BITS
    band = gray[2: height // 4 - 2]
    return sum(1 << bit for bit in range(BITS) if band[:, bit * block + 2:(bit + 1) * block - 2].mean() > 128)


def write_video(path: Path, frames: int = 150, rate: int = 25, codec: str = "libx264", container_format=None,
                options: dict | None = None, container_options: dict | None = None,
                times_ms: list[int] | None = None, rotation: int = 0, noise: int = 0, audio: bool = False,
                width: int = WIDTH, height: int = HEIGHT) -> Path:
    """Encode `frames` pattern frames. times_ms gives each frame's own presentation time
    (variable frame rate, time base 1/1000); otherwise frames are 1/rate apart. noise adds
    that much random noise below the band, which makes the file about 3 KB a frame larger.
    audio adds an AAC track as long as the video."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options or {}
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        sound = _audio_stream(container) if audio else None  # every stream exists before muxing starts
        for number in range(frames):
            image = pattern(number, width, height)
            if noise:
                below = image[height // 4:].astype(np.int16)
                image[height // 4:] = np.clip(below + rng.integers(-noise, noise + 1, below.shape[:2] + (1,)), 0, 255)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[number], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if sound:
            _encode_tone(container, sound, frames / rate)
    return path


def write_audio(path: Path, seconds: float = 1.0) -> Path:
    """An audio-only file (AAC): a container with no video stream."""
    with av.open(str(path), "w") as container:
        _encode_tone(container, _audio_stream(container), seconds)
    return path


def _audio_stream(container, rate: int = 16000):
    return container.add_stream("aac", rate=rate, layout="mono")


def _encode_tone(container, stream, seconds: float) -> None:
    rate, samples = stream.rate, 1024
    for index in range(int(seconds * rate / samples)):
        tone = np.sin(np.arange(samples) / 10.0 + index)[None, :].astype(np.float32) * 0.1
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, index * samples
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def irregular_times_ms(frames: int, seed: int = 0) -> list[int]:
    """Presentation times with gaps of 20 to 80 ms (12.5 to 50 fps), starting at 0."""
    gaps = np.random.default_rng(seed).integers(20, 81, frames - 1)
    return [0, *np.cumsum(gaps).tolist()]
