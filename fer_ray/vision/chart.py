"""A video's timeline as a PNG, drawn with OpenCV (anti-aliased lines) and Pillow (TrueType
text) rather than matplotlib: the labelling job draws one per video, and matplotlib took about
95 ms a picture (ticks, text layout, its PNG writer) and 0.3 s to import in each worker, a
fifth of the CPU of a run over many short videos (bench/label_videos.py). This takes a few ms.

Layout (pixels, for a 900 px wide picture): a title band, one panel per track stacked on one
shared time axis, and with thumbnails a column of faces at the left, one beside each panel."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fer_ray.vision.draw import encode_png

WIDTH = 900
TITLE_BAND, AXIS_BAND = 45, 55
PANEL_HEIGHT, GAP = 160, 0.3  # the height a panel adds, the gap between panels (of a panel's height)
FIXED_HEIGHT = TITLE_BAND + AXIS_BAND + 20  # 120 + 160 px a track: the matplotlib figure's 1.2 + 1.6 in
MAX_TRACKS = 8  # a video's timeline shows its longest tracks, this many at most
THUMBNAIL_COLUMN = WIDTH // 8  # faces stay left of this x
# a panel's left edge: room for "track N" and the probability labels (after the faces, if any)
PANEL_LEFT, PANEL_LEFT_AFTER_FACES, PANEL_RIGHT = 72, THUMBNAIL_COLUMN + 63, WIDTH - 18
TICK = 4
# matplotlib's tab10, as RGB; the training plots take theirs from here too (plots.palette)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
INK, BACKGROUND = (0, 0, 0), (255, 255, 255)


class Label(NamedTuple):
    """A text drawn by Pillow once OpenCV has drawn the lines: at (x, y) by Pillow's anchor
    (e.g. "mm": its middle), or turned to read upwards and centred there."""
    x: int
    y: int
    text: str
    size: int
    anchor: str = "mm"
    upwards: bool = False


def timeline_png(tracks: dict[int, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
                 title: str = "", thumbnails: dict[int, np.ndarray] | None = None) -> bytes:
    """One panel per track (the longest MAX_TRACKS, in id order): each class's probability
    over the video's time, on one shared time axis. tracks: id -> (times_s, probabilities (n, C)).
    With `thumbnails` (id -> grey or RGB uint8 face), each panel has its track's face at its
    left (nothing for a track without one)."""
    shown = sorted(sorted(tracks, key=lambda t: -len(tracks[t][0]))[:MAX_TRACKS])
    rows = max(len(shown), 1)
    image = np.full((FIXED_HEIGHT + PANEL_HEIGHT * rows, WIDTH, 3), BACKGROUND, np.uint8)
    panels = panel_boxes(rows, image.shape[0], left=PANEL_LEFT_AFTER_FACES if thumbnails is not None else PANEL_LEFT)
    middle = (panels[0][0] + PANEL_RIGHT) // 2
    t0, t1 = time_range([tracks[t][0] for t in shown])
    xs = nice_ticks(t0, t1)
    texts: list[Label] = []
    for k, box in enumerate(panels):
        draw_axes(image, box, (t0, t1), xs, texts, last=k == rows - 1)
    for box, track in zip(panels, shown):
        times, probabilities = tracks[track]
        probabilities = np.asarray(probabilities, np.float64).reshape(len(times), -1)
        for i in range(len(class_names)):
            draw_curve(image, box, (t0, t1), np.asarray(times, np.float64), probabilities[:, i],
                       PALETTE[i % len(PALETTE)])
        texts.append(Label(box[0] - 38, (box[1] + box[3]) // 2, f"track {track}", 12, upwards=True))
        if thumbnails is not None and thumbnails.get(track) is not None:
            paste_thumbnail(image, thumbnails[track], box)
    if not shown:
        texts.append(Label(middle, (panels[0][1] + panels[0][3]) // 2, "no face found", 12))
    texts.append(Label(middle, TITLE_BAND - 6, title, 13, "md"))
    texts.append(Label(middle, image.shape[0] - 12, "time in the video (s)", 12, "md"))
    picture = Image.fromarray(image)
    draw_texts(picture, texts)
    if shown and class_names:
        draw_legend(picture, panels[0], class_names)
    return encode_png(np.asarray(picture))


def panel_boxes(rows: int, height: int, left: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each panel, top to bottom, between the title and the time axis."""
    panel = (height - TITLE_BAND - AXIS_BAND) / (rows + GAP * (rows - 1))
    tops = [TITLE_BAND + k * panel * (1 + GAP) for k in range(rows)]
    return [(left, round(top), PANEL_RIGHT, round(top + panel)) for top in tops]


def time_range(times: list[np.ndarray]) -> tuple[float, float]:
    """The shared time axis: all tracks' times with 5% room either side (1 s wide at least)."""
    values = np.concatenate([np.asarray(t, np.float64).ravel() for t in times]) if times else np.zeros(0)
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if high - low < 1.0:
        middle = (low + high) / 2
        low, high = middle - 0.5, middle + 0.5
    room = 0.05 * (high - low)
    return low - room, high + room


def nice_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside [low, high]."""
    raw = (high - low) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(s * power for s in (1, 2, 5, 10) if s * power >= raw)
    first = math.ceil(low / step) * step
    return [round(first + k * step, 10) for k in range(int((high - first) / step) + 1)]


def tick_label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-9 else "0"


def draw_axes(image: np.ndarray, box: tuple[int, int, int, int], span: tuple[float, float], xs: list[float],
              texts: list[Label], last: bool) -> None:
    """A panel's frame, its probability ticks (0, 0.5, 1) with labels, its time ticks (labelled
    on the last panel only, the axis being shared)."""
    x0, y0, x1, y1 = box
    cv2.rectangle(image, (x0, y0), (x1, y1), INK, 1)
    for value in (0.0, 0.5, 1.0):
        y = round(y1 - value * (y1 - y0))
        cv2.line(image, (x0 - TICK, y), (x0, y), INK, 1)
        texts.append(Label(x0 - TICK - 3, y, f"{value:.1f}", 11, "rm"))
    for value in xs:
        x = round(x0 + (value - span[0]) / (span[1] - span[0]) * (x1 - x0))
        cv2.line(image, (x, y1), (x, y1 + TICK), INK, 1)
        if last:
            texts.append(Label(x, y1 + TICK + 2, tick_label(value), 11, "mt"))


def draw_curve(image: np.ndarray, box: tuple[int, int, int, int], span: tuple[float, float],
               times: np.ndarray, values: np.ndarray, colour: tuple[int, int, int]) -> None:
    """One class's probability as an anti-aliased polyline inside the panel (sub-pixel points)."""
    x0, y0, x1, y1 = box
    finite = np.isfinite(times) & np.isfinite(values)  # a gap in the data is left out, as matplotlib does
    x = x0 + (times[finite] - span[0]) / (span[1] - span[0]) * (x1 - x0)
    y = y1 - np.clip(values[finite], 0.0, 1.0) * (y1 - y0)
    if len(x) == 0:
        return
    if len(x) == 1:  # one sample: a dot, as matplotlib would show nothing
        cv2.circle(image, (round(x[0]), round(y[0])), 2, colour, -1, cv2.LINE_AA)
        return
    points = np.round(np.stack([x, y], axis=1) * 16).astype(np.int32)  # 4 fractional bits
    cv2.polylines(image, [points], False, colour, 1, cv2.LINE_AA, shift=4)


def paste_thumbnail(image: np.ndarray, face: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """The face as a square as tall as the panel (at most the column's width), centred in the
    thumbnail column beside the panel."""
    side = min(box[3] - box[1], THUMBNAIL_COLUMN - 12)
    rgb = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) if face.ndim == 2 else face[:, :, :3]
    square = cv2.resize(np.ascontiguousarray(rgb, np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    top, x = (box[1] + box[3] - side) // 2, (THUMBNAIL_COLUMN - side) // 2
    image[top:top + side, x:x + side] = square


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's own TrueType font (no file to find, nothing to download)."""
    return ImageFont.load_default(size=size)


def draw_texts(picture: Image.Image, texts: list[Label]) -> None:
    draw = ImageDraw.Draw(picture)
    for label in texts:
        if not label.text:
            continue
        if label.upwards:
            draw_upwards(picture, label)
        else:
            draw.text((label.x, label.y), label.text, fill=INK, font=font(label.size), anchor=label.anchor)


def draw_upwards(picture: Image.Image, label: Label) -> None:
    """Pillow draws text level only: draw it on a mask, turn that, and ink through it."""
    left, top, right, bottom = font(label.size).getbbox(label.text)
    mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), label.text, fill=255, font=font(label.size))
    mask = mask.rotate(90, expand=True)
    picture.paste(Image.new("RGB", mask.size, INK), (label.x - mask.width // 2, label.y - mask.height // 2), mask)


def draw_legend(picture: Image.Image, box: tuple[int, int, int, int], class_names: Sequence[str]) -> None:
    """Each class's colour and name in a framed box at the top right of the first panel, at
    most four to a row."""
    columns = min(len(class_names), 4)
    draw, small = ImageDraw.Draw(picture), font(10)
    cell = max(int(small.getlength(name)) for name in class_names) + 30
    rows = math.ceil(len(class_names) / columns)
    right, top = box[2] - 4, box[1] + 4
    left = right - columns * cell - 6
    draw.rectangle((left, top, right, top + rows * 14 + 6), fill=BACKGROUND, outline=(204, 204, 204))
    for i, name in enumerate(class_names):
        x, y = left + 6 + (i % columns) * cell, top + 10 + (i // columns) * 14
        draw.line((x, y, x + 18, y), fill=PALETTE[i % len(PALETTE)], width=2)
        draw.text((x + 22, y), name, fill=INK, font=small, anchor="lm")
