"""Short test videos of synthetic faces (fer_ray.vision.synthetic_face), made with PyAV: a face
whose expression changes at a known time, two faces moving, no face, and bad files."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from fer_ray.vision.synthetic_face import draw_face, identity_for

TILE = 120  # a face is drawn on a square tile of this side, pasted into the frame


def face_tile(expression: str, subject: str) -> np.ndarray:
    image, _ = draw_face(expression, identity_for(subject), size=TILE, color=True, face_scale=0.8)
    return image


def frame_with(tiles: list[tuple[np.ndarray, int, int]], width: int, height: int) -> np.ndarray:
    """A grey frame with each (tile, x, y) pasted at x, y."""
    frame = np.full((height, width, 3), 128, np.uint8)
    for tile, x, y in tiles:
        frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return frame


def encode(path: Path, frames, rate: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = None
        for image in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def expression_change(path: Path, before: str = "neutral", after: str = "sad", change_s: float = 2.5,
                      seconds: float = 5.0, rate: int = 8) -> Path:
    """One face, drifting right by a pixel a frame, `before` until change_s, then `after`."""
    tiles = {name: face_tile(name, "video-a") for name in (before, after)}
    frames = (frame_with([(tiles[before if n / rate < change_s else after], 10 + n // 2, 0)], 180, TILE)
              for n in range(int(seconds * rate)))
    return encode(path, frames, rate)


def two_faces(path: Path, seconds: float = 5.0, rate: int = 8) -> Path:
    """Two people side by side, moving towards each other (never overlapping)."""
    left, right = face_tile("neutral", "video-b"), face_tile("surprise", "video-c")
    frames = (frame_with([(left, 4 + n, 10), (right, 196 - n, 0)], 320, 140) for n in range(int(seconds * rate)))
    return encode(path, frames, rate)


def no_face(path: Path, seconds: float = 3.0, rate: int = 8) -> Path:
    ramp = np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (120, 1, 3))
    return encode(path, (np.roll(ramp, n, axis=1) for n in range(int(seconds * rate))), rate)
