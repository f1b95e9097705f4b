"""Contact sheets of aligned faces with their landmarks, for eyeballing a run."""
from __future__ import annotations

import cv2
import numpy as np

from fer_ray.face68 import BROWS, EYES, JAW, MOUTH, NOSE

# 68-point groups and their dot colours (RGB).
LANDMARK_GROUPS = (
    (JAW, (255, 255, 0)),
    (BROWS, (255, 128, 0)),
    (NOSE, (0, 200, 255)),
    (EYES, (0, 255, 0)),
    (MOUTH, (255, 0, 160)),
)
CAPTION_HEIGHT = 14
CAPTION_FONT_SCALE = 0.35


def contact_sheet(faces: list[np.ndarray], landmarks: list[np.ndarray],
                  captions: list[str] | None = None, cols: int = 8, scale: int = 3) -> np.ndarray:
    """RGB uint8 grid: each face (grey or RGB) upscaled by `scale`, its landmarks as
    coloured dots (an entry may be None), and its caption underneath."""
    if not faces:
        raise ValueError("contact_sheet: no faces to draw")
    captions = captions if captions is not None else [""] * len(faces)
    tiles = [_tile(face, points, caption, scale)
             for face, points, caption in zip(faces, landmarks, captions, strict=True)]
    return _grid(tiles, cols)


def _tile(face: np.ndarray, points: np.ndarray | None, caption: str, scale: int) -> np.ndarray:
    rgb = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) if face.ndim == 2 else face
    big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if points is not None:
        _draw_landmarks(big, np.asarray(points, np.float64) * scale + (scale - 1) / 2)
    band = np.zeros((CAPTION_HEIGHT, big.shape[1], 3), np.uint8)
    cv2.putText(band, _fit(caption, big.shape[1]), (2, CAPTION_HEIGHT - 4),
                cv2.FONT_HERSHEY_SIMPLEX, CAPTION_FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([big, band])


def _draw_landmarks(image: np.ndarray, points: np.ndarray) -> None:
    radius = max(1, image.shape[0] // 96)  # 1 px at 48x3, grows with larger tiles
    for group, colour in LANDMARK_GROUPS:
        for x, y in np.rint(points[group]).astype(int):
            cv2.circle(image, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA)


def _fit(caption: str, width: int) -> str:
    """Cut the caption to what fits the tile width."""
    while caption and cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX,
                                      CAPTION_FONT_SCALE, 1)[0][0] > width - 4:
        caption = caption[:-1]
    return caption


def _grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Tiles (padded to the largest) in rows of `cols`, a 2 px dark gap between them."""
    height = max(t.shape[0] for t in tiles) + 2
    width = max(t.shape[1] for t in tiles) + 2
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * height, cols * width, 3), 32, np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // cols) * height, (i % cols) * width
        sheet[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    return sheet


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a grey (H,W) or RGB (H,W,3) uint8 image."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()
