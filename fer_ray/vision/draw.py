"""Pictures for eyeballing a run: contact sheets of aligned faces with their landmarks, and
video frames with each tracked face's box, track id and label (label-videos --annotate)."""
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
# Box colours (RGB) by track id: saturated and far from mid grey, so a box stays visible on any
# background and after H.264's colour subsampling; the caption's text is black or white by brightness.
TRACK_COLOURS = ((0, 230, 0), (255, 0, 255), (0, 200, 255), (255, 220, 0), (255, 120, 0), (40, 80, 255),
                 (255, 40, 40), (150, 255, 150))


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


INVALID_COLOUR = (255, 0, 0)  # RGB: the cross and frame of a clip frame where the face was lost


def film_strips(clips: list[np.ndarray], valid: list[np.ndarray], captions: list[str], scale: int = 2) -> np.ndarray:
    """RGB uint8 sheet with one film strip per clip: its T frames ((T, h, w, c) uint8, c = 1
    or 3) in a row, upscaled by `scale`; a frame that is not valid is dimmed, crossed and framed
    in red; the caption (label, subject, split) underneath."""
    if not clips:
        raise ValueError("film_strips: no clips to draw")
    strips = [_strip(clip, mask, caption, scale) for clip, mask, caption in zip(clips, valid, captions, strict=True)]
    return _grid(strips, 1)


def _strip(clip: np.ndarray, valid: np.ndarray, caption: str, scale: int) -> np.ndarray:
    frames = [_film_frame(frame, bool(ok), scale) for frame, ok in zip(clip, valid, strict=True)]
    row = np.hstack([np.pad(f, ((0, 0), (0, 2), (0, 0))) for f in frames])  # a dark gap between frames
    band = np.zeros((CAPTION_HEIGHT, row.shape[1], 3), np.uint8)
    cv2.putText(band, _fit(caption, row.shape[1]), (2, CAPTION_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX,
                CAPTION_FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([row, band])


def _film_frame(frame: np.ndarray, valid: bool, scale: int) -> np.ndarray:
    rgb = np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame
    big = cv2.resize(np.ascontiguousarray(rgb), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if not valid:
        big = (big // 3).astype(np.uint8)
        h, w = big.shape[:2]
        cv2.line(big, (0, 0), (w - 1, h - 1), INVALID_COLOUR, max(1, scale))
        cv2.line(big, (w - 1, 0), (0, h - 1), INVALID_COLOUR, max(1, scale))
        cv2.rectangle(big, (0, 0), (w - 1, h - 1), INVALID_COLOUR, max(1, scale))
    return big


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a grey (H,W) or RGB (H,W,3) uint8 image."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()


def track_colour(track_id: int) -> tuple[int, int, int]:
    return TRACK_COLOURS[int(track_id) % len(TRACK_COLOURS)]


def face_caption(track_id: int, label: str, confidence: float) -> str:
    return f"#{int(track_id)} {label} {float(confidence):.2f}"


def draw_tracked_faces(image: np.ndarray, boxes, track_ids, captions: list[str]) -> np.ndarray:
    """A copy of a grey or RGB frame, as RGB, with each face's box (x0, y0, x1, y1) in its
    track's colour and its caption on a band of that colour above the box (inside the box
    where the box touches the frame's top)."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    side = min(out.shape[:2])
    thickness = max(2, round(side / 240))  # 2 px up to 480p, thicker on larger frames
    scale = max(0.35, side / 720)
    for box, track, caption in zip(np.asarray(boxes, np.float64).reshape(-1, 4), track_ids, captions, strict=True):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        colour = track_colour(track)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        _draw_caption(out, caption, (x0, y0), colour, scale)
    return out


def _draw_caption(image: np.ndarray, caption: str, corner: tuple[int, int], colour, scale: float) -> None:
    (width, height), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = height + baseline + 2
    x0 = max(min(corner[0], image.shape[1] - width - 4), 0)  # inside the frame on the right too
    y0 = corner[1] - band if corner[1] >= band else max(corner[1], 0)
    cv2.rectangle(image, (x0, y0), (x0 + width + 3, y0 + band), colour, -1)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(image, caption, (x0 + 2, y0 + height + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)

