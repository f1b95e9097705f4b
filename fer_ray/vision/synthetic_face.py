"""Procedurally drawn faces with known landmarks, for sample data and tests (numpy + OpenCV only).

A face is built in a *canonical frame*: the origin is the midpoint between the eye centres,
one unit is half the face width at the eyes, y points down. An `Identity` (drawn from a
seeded rng per subject) fixes the proportions and colours; an expression fixes the
geometry of brows, eyes, nose and mouth (one dict per expression in `GEOMETRY`). The 68
iBUG landmarks are computed first and every feature is drawn from them, so the returned
landmarks are the true positions of the drawn features:

  0-16 jaw (image left to right, 8 = chin), 17-21 / 22-26 brows (each outer to inner /
  inner to outer along the brow's centre line), 27-30 nose bridge to tip, 31-35 nose
  base, 36-41 / 42-47 eyes (corners and lid points), 48-59 outer lips, 60-67 inner lips.

Shading is what makes classical detectors accept these drawings: dark eye sockets under
a brighter forehead, a bright nose bridge between them, a shadowed jaw line and neck,
hair framing the face, and a light blur at the end.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from fer_ray.labels import CANONICAL

EXPRESSIONS = CANONICAL

# Expression geometry: offsets from NEUTRAL in canonical units (y down), multipliers where
# the neutral value is 1. brow_inner/brow_outer > 0 raise that end of the brows.
NEUTRAL = dict(
    brow_inner=0.0, brow_outer=0.0, brow_pinch=0.0, eye_open=1.0, lower_lid=0.0,
    mouth_curve=0.0, mouth_width=1.0, mouth_open=0.0, upper_lip=0.0, jaw_drop=0.0,
    lip_press=0.0, contempt=0.0, wrinkle=0.0, fold=0.0, teeth=0.0, forehead=0.0,
    frown=0.0, cheek=0.0,
)
GEOMETRY = {
    "neutral": {},
    "happy": dict(mouth_curve=0.2, mouth_width=1.25, mouth_open=0.12, teeth=1.0, eye_open=0.72,
                  lower_lid=0.45, fold=1.0, cheek=1.0, brow_outer=0.02),
    "sad": dict(brow_inner=0.14, brow_outer=-0.07, eye_open=0.75, mouth_curve=-0.13,
                mouth_width=0.92, lip_press=0.3, fold=0.3, forehead=0.5),
    "surprise": dict(brow_inner=0.19, brow_outer=0.16, eye_open=1.65, mouth_open=0.34,
                     mouth_width=0.72, jaw_drop=0.2, forehead=1.0),
    "fear": dict(brow_inner=0.16, brow_outer=0.03, brow_pinch=0.06, eye_open=1.5,
                 mouth_open=0.13, mouth_width=1.22, mouth_curve=-0.06, teeth=1.0,
                 jaw_drop=0.06, forehead=0.6, fold=0.4),
    "disgust": dict(brow_inner=-0.09, brow_outer=-0.02, brow_pinch=0.04, eye_open=0.55,
                    lower_lid=0.35, upper_lip=0.09, mouth_curve=-0.08, mouth_width=0.95,
                    mouth_open=0.03, teeth=1.0, wrinkle=1.0, fold=1.0, frown=0.4),
    "anger": dict(brow_inner=-0.17, brow_outer=0.04, brow_pinch=0.08, eye_open=0.68,
                  mouth_width=0.82, lip_press=0.8, mouth_curve=-0.03, frown=1.0, fold=0.3),
    "contempt": dict(contempt=1.0, eye_open=0.88, lower_lid=0.15, brow_outer=0.03, fold=0.2),
}
SKIN_TONES = np.array([(0.96, 0.82, 0.72), (0.92, 0.74, 0.62), (0.84, 0.64, 0.50),
                       (0.74, 0.54, 0.40), (0.62, 0.44, 0.32), (0.52, 0.36, 0.26)], np.float32)
HAIR_TONES = np.array([(0.10, 0.07, 0.05), (0.22, 0.14, 0.08), (0.38, 0.25, 0.14),
                       (0.62, 0.48, 0.30), (0.05, 0.05, 0.06), (0.45, 0.20, 0.10)], np.float32)
IRIS_TONES = np.array([(0.25, 0.15, 0.08), (0.20, 0.35, 0.55), (0.30, 0.40, 0.25),
                       (0.12, 0.08, 0.05)], np.float32)
HAIR_STYLES = ("short", "long", "bangs")
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # OpenCV's RGB -> grey


@dataclass(frozen=True)
class Identity:
    """Who is drawn: proportions and colours, fixed per subject. Lengths in canonical units."""

    subject: str
    face_width: float  # overall scale multiplier
    chin: float  # eye line to chin
    jaw_square: float  # superellipse exponent of the jaw (2 = ellipse)
    eye_spacing: float  # half the distance between eye centres
    eye_width: float
    eye_height: float  # upper lid height above the eye line when neutral
    brow_height: float  # brow centre line above the eye line
    brow_thickness: float
    brow_arch: float
    nose_length: float  # eye line to nose tip
    nose_width: float  # half width of the alae
    mouth_drop: float  # nose tip to mouth line
    mouth_width: float  # half width
    lip_thickness: float
    hairline: float
    hair_style: str
    skin: tuple
    hair: tuple
    iris: tuple
    background: tuple  # (top colour, bottom colour)
    clothes: tuple


def identity_for(subject: str, seed: int = 0) -> Identity:
    """The identity of a subject: the same subject and seed always give the same face."""
    rng = np.random.default_rng([seed, zlib.crc32(subject.encode())])
    u = rng.uniform
    return Identity(
        subject=subject, face_width=u(0.93, 1.07), chin=u(1.50, 1.78), jaw_square=u(2.0, 2.9),
        eye_spacing=u(0.42, 0.49), eye_width=u(0.33, 0.39), eye_height=u(0.075, 0.092),
        brow_height=u(0.27, 0.34), brow_thickness=u(0.05, 0.08), brow_arch=u(0.025, 0.06),
        nose_length=u(0.55, 0.68), nose_width=u(0.15, 0.20), mouth_drop=u(0.33, 0.42),
        mouth_width=u(0.28, 0.35), lip_thickness=u(0.05, 0.075), hairline=u(-0.98, -0.80),
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        skin=_tone(rng, SKIN_TONES), hair=_tone(rng, HAIR_TONES), iris=_tone(rng, IRIS_TONES),
        background=(_tone(rng, None), _tone(rng, None)), clothes=_tone(rng, None),
    )


def _tone(rng: np.random.Generator, palette: np.ndarray | None) -> tuple:
    if palette is None:  # any muted colour
        return tuple(float(c) for c in rng.uniform(0.25, 0.85, 3))
    base = palette[rng.integers(len(palette))]
    return tuple(float(c) for c in np.clip(base * rng.uniform(0.94, 1.06, 3), 0, 1))


def expression_params(expression: str, intensity: float = 1.0, rng=None) -> dict:
    """Geometry of an expression at an intensity (0 = neutral, 1 = peak), jittered by rng."""
    if expression not in GEOMETRY:
        raise ValueError(f"unknown expression {expression!r}; expected one of {list(GEOMETRY)}")
    peak = {**NEUTRAL, **GEOMETRY[expression]}
    params = {k: NEUTRAL[k] + intensity * (peak[k] - NEUTRAL[k]) for k in NEUTRAL}
    if rng is not None:  # takes differ a little: ~10% of each movement plus a small offset
        params = {k: v + (v - NEUTRAL[k]) * rng.normal(0, 0.1) + rng.normal(0, 0.006)
                  for k, v in params.items()}
    return params


# ---------------------------------------------------------------- geometry (canonical frame)

def _curve(x0, x1, fn, n=24):
    xs = np.linspace(x0, x1, n)
    return np.stack([xs, fn(xs)], 1)


def _jaw(idt: Identity, p: dict) -> np.ndarray:
    """Landmarks 0-16, evenly spaced along the jaw from ear to ear; the chin drops with the jaw."""
    a = np.linspace(0, np.pi, 201)
    e = 2.0 / idt.jaw_square
    x = -np.sign(np.cos(a)) * np.abs(np.cos(a)) ** e
    chin = idt.chin + p["jaw_drop"]
    y = 0.08 + (chin - 0.08) * np.abs(np.sin(a)) ** e
    arc = np.concatenate([[0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    at = np.linspace(0, arc[-1], 17)
    return np.stack([np.interp(at, arc, x), np.interp(at, arc, y)], 1)


def _brow_line(idt: Identity, p: dict, side: int, n: int) -> np.ndarray:
    """Centre line of one brow from inner to outer end; side -1 = image left."""
    t = np.linspace(0, 1, n)
    inner, outer = idt.eye_spacing - 0.24 - p["brow_pinch"], idt.eye_spacing + 0.30
    x = side * (inner + (outer - inner) * t)
    lift = p["brow_inner"] * (1 - t) + p["brow_outer"] * t
    y = -idt.brow_height - idt.brow_arch * np.sin(np.pi * (0.2 + 0.8 * t)) - lift
    return np.stack([x, y], 1)


def _eye_lids(idt: Identity, p: dict, side: int, n: int = 20):
    """(upper, lower) lid curves of one eye, each from the outer to the inner corner."""
    t = np.linspace(0, 1, n)
    cx, hw = side * idt.eye_spacing, idt.eye_width / 2
    x = cx + side * hw * (1 - 2 * t)  # outer corner first
    tilt = -0.02 * (1 - t)  # outer corners slightly higher
    up = idt.eye_height * p["eye_open"] * np.sin(np.pi * t) ** 0.8 * (1 + 0.15 * np.sin(np.pi * t))
    low = idt.eye_height * 0.65 * max(0.25, 1 - p["lower_lid"]) * min(p["eye_open"], 1.3)
    low = low * np.sin(np.pi * t) ** 1.1
    return np.stack([x, tilt - up], 1), np.stack([x, tilt + low], 1)


def _eye_points(idt: Identity, p: dict, side: int) -> np.ndarray:
    """Six iBUG points of one eye: left corner, two upper, right corner, two lower (image order)."""
    upper, lower = _eye_lids(idt, p, side, n=4)  # t = 0, 1/3, 2/3, 1
    if side < 0:  # image-left eye: outer corner is the left one
        return np.array([upper[0], upper[1], upper[2], upper[3], lower[2], lower[1]])
    return np.array([upper[3], upper[2], upper[1], upper[0], lower[1], lower[2]])


def _mouth_frame(idt: Identity, p: dict):
    """Mouth centre y, half width and the mouth-line function of x."""
    my = idt.nose_length + idt.mouth_drop + 0.45 * p["jaw_drop"]
    mw = idt.mouth_width * p["mouth_width"]
    c = p["contempt"]

    def line(x):
        xi = x / mw
        return my - p["mouth_curve"] * xi ** 2 - 0.13 * c * np.clip(xi, 0, None) ** 2.5

    return my, mw, line


def _lips(idt: Identity, p: dict, n: int = 25):
    """Outer upper, outer lower, inner upper, inner lower lip curves (left to right)."""
    my, mw, line = _mouth_frame(idt, p)
    right = mw * (1 + 0.12 * p["contempt"])
    xs = np.linspace(-mw, right, n)
    xi = np.clip(np.where(xs > 0, xs / right, xs / mw), -1, 1)
    bell = 1 - xi ** 2
    gap_up = 0.35 * p["mouth_open"] + p["upper_lip"]
    gap_low = 0.65 * p["mouth_open"]
    inner_up = line(xs) - gap_up * bell ** 0.8
    inner_low = line(xs) + gap_low * bell ** 0.8
    thick = idt.lip_thickness * (1 - 0.55 * p["lip_press"]) * (1 - 0.25 * max(p["mouth_curve"], 0) / 0.2)
    bow = 0.25 * np.exp(-((np.abs(xi) - 0.3) / 0.16) ** 2) - 0.15 * np.exp(-(xi / 0.1) ** 2)
    outer_up = inner_up - thick * (np.sqrt(bell) * 0.85 + bow * np.sqrt(bell))
    outer_low = inner_low + 1.3 * thick * np.sqrt(bell)
    return tuple(np.stack([xs, ys], 1) for ys in (outer_up, outer_low, inner_up, inner_low))


def _sample(curve: np.ndarray, xs) -> np.ndarray:
    """Points of a left-to-right curve at given x positions."""
    return np.stack([xs, np.interp(xs, curve[:, 0], curve[:, 1])], 1)


def _mouth_points(idt: Identity, p: dict) -> np.ndarray:
    """Landmarks 48-67."""
    ou, ol, iu, il = _lips(idt, p, n=81)
    left, right = ou[0, 0], ou[-1, 0]

    def at(fractions: list[float]) -> np.ndarray:
        return left + (right - left) * np.asarray(fractions)

    outer_top = _sample(ou, at([0.0, 0.2, 0.38, 0.5, 0.62, 0.8, 1.0]))  # 48-54
    outer_bot = _sample(ol, at([0.8, 0.62, 0.5, 0.38, 0.2]))  # 55-59
    inner_top = _sample(iu, at([0.06, 0.33, 0.5, 0.67, 0.94]))  # 60-64
    inner_bot = _sample(il, at([0.67, 0.5, 0.33]))  # 65-67
    return np.concatenate([outer_top, outer_bot, inner_top, inner_bot])


def _nose_points(idt: Identity, p: dict) -> np.ndarray:
    """Landmarks 27-35; disgust lifts the alae."""
    nl, nw = idt.nose_length, idt.nose_width
    bridge = np.stack([np.zeros(4), np.linspace(-0.02, nl, 4)], 1)
    lift = 0.04 * p["wrinkle"]
    base_x = np.array([-nw, -0.5 * nw, 0, 0.5 * nw, nw])
    base_y = nl + np.array([0.0, 0.06, 0.08, 0.06, 0.0]) - lift * np.array([1, 0.7, 0.3, 0.7, 1])
    return np.concatenate([bridge, np.stack([base_x, base_y], 1)])


def canonical_landmarks(idt: Identity, p: dict) -> np.ndarray:
    """The 68 iBUG points in the canonical frame."""
    brows = [_brow_line(idt, p, -1, 5)[::-1], _brow_line(idt, p, 1, 5)]  # 17-21 outer->inner, 22-26
    eyes = [_eye_points(idt, p, -1), _eye_points(idt, p, 1)]
    return np.concatenate([_jaw(idt, p), *brows, _nose_points(idt, p), *eyes,
                           _mouth_points(idt, p)]).astype(np.float32)


# ---------------------------------------------------------------- painting

class _Canvas:
    """A float image (RGB, or grey in one channel) and its canonical->pixel affine map.

    Shapes are given in canonical units; each paint touches only its region of interest.
    """

    def __init__(self, height: int, width: int, center, scale: float, angle_deg: float, color: bool):
        # Grey faces are painted in one channel: every step is linear in the colour, so this
        # equals painting in RGB and converting, at a third of the cost.
        self.weights = np.eye(3, dtype=np.float32) if color else GREY_WEIGHTS[:, None]
        self.img = np.zeros((height, width, self.weights.shape[1]), np.float32)
        a = np.deg2rad(angle_deg)
        self.A = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
        self.t = np.asarray(center, np.float32)
        self.scale = scale

    def px(self, pts) -> np.ndarray:
        return np.asarray(pts, np.float32) @ self.A.T + self.t

    def mask(self, shapes, blur: float = 0.0, thickness: float | None = None, roi=None):
        """Alpha of filled polygons (or polylines of a thickness), over a region of interest."""
        pix = [self.px(s) for s in shapes]
        margin = 3 * blur * self.scale + (thickness or 0) * self.scale + 3
        if roi is None:
            allp = np.concatenate(pix)
            h, w = self.img.shape[:2]
            x0, y0 = np.clip(np.floor(allp.min(0) - margin), 0, [w, h]).astype(int)
            x1, y1 = np.clip(np.ceil(allp.max(0) + margin), 0, [w, h]).astype(int)
            roi = (y0, y1, x0, x1)
        y0, y1, x0, x1 = roi
        m = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
        fixed = [np.round((q - [x0, y0]) * 16).astype(np.int32) for q in pix]
        if thickness is None:
            cv2.fillPoly(m, fixed, 255, cv2.LINE_AA, shift=4)
        else:
            width = max(1, int(round(thickness * self.scale)))
            cv2.polylines(m, fixed, False, 255, width, cv2.LINE_AA, shift=4)
        alpha = m.astype(np.float32) / 255
        if blur > 0:
            alpha = _blur(alpha, blur * self.scale)
        return alpha, roi

    def _view(self, roi):
        y0, y1, x0, x1 = roi
        return self.img[y0:y1, x0:x1]

    def paint(self, shapes, color, opacity=1.0, clip=None, **kw):
        alpha, roi = self.mask(shapes, roi=clip[1] if clip else None, **kw)
        if clip is not None:
            alpha = alpha * clip[0]
        view = self._view(roi)
        a = (opacity * alpha)[..., None]
        view *= 1 - a
        view += a * self.color(color)

    def color(self, rgb) -> np.ndarray:
        """An RGB colour in this canvas's channels."""
        return np.asarray(rgb, np.float32) @ self.weights

    def shade(self, shapes, amount, **kw):
        """Darken (amount > 0) or lighten (amount < 0) under the shapes."""
        alpha, roi = self.mask(shapes, **kw)
        view = self._view(roi)
        a = (abs(amount) * alpha)[..., None]
        if amount > 0:
            view *= 1 - a
        else:
            view += (1 - view) * a


def _blur(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide blurs run on a 4x smaller copy (same look, a fraction of the time)."""
    h, w = alpha.shape
    if sigma < 4 or min(h, w) < 16:
        return cv2.GaussianBlur(alpha, (0, 0), sigma)
    small = cv2.resize(alpha, ((w + 3) // 4, (h + 3) // 4), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / 4)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _ellipse(cx, cy, rx, ry, n=40, a0=0.0, a1=2 * np.pi) -> np.ndarray:
    a = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)


def _mix(c, k) -> tuple:
    return tuple(float(v) for v in np.clip(np.asarray(c) * np.asarray(k), 0, 1))


def _paint_background(cv: _Canvas, idt: Identity, light: float):
    h = cv.img.shape[0]
    top, bottom = cv.color(idt.background[0]), cv.color(idt.background[1])
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    cv.img[:] = (top * (1 - ramp) + bottom * ramp) * (0.95 + 0.1 * light)


def _cranium(grow: float = 1.0, n: int = 40) -> np.ndarray:
    """Top of the head, from the right temple over the crown to the left temple."""
    return _ellipse(0, 0.08, 1.0 * grow, 1.45 * grow, n, 0.0, -np.pi)


def _paint_body(cv: _Canvas, idt: Identity, lm: np.ndarray):
    cv.paint([np.array([[-2.6, 4.5], [-2.2, 2.35], [-0.6, 1.9], [0.6, 1.9], [2.2, 2.35], [2.6, 4.5]])],
             idt.clothes)
    if idt.hair_style == "long":
        back = np.concatenate([_cranium(1.12)[::-1] + [0, -0.02], [[1.22, 2.3], [-1.22, 2.3]]])
        cv.paint([back], _mix(idt.hair, 0.85))
    neck = np.array([[-0.5, 0.8], [0.5, 0.8], [0.55, 2.2], [0.0, 2.45], [-0.55, 2.2]])
    cv.paint([neck], _mix(idt.skin, 0.78))
    cv.shade([lm[3:14] + [0, 0.12]], 0.35, thickness=0.25, blur=0.1)  # shadow of the jaw on the neck
    for side in (-1, 1):
        cv.paint([_ellipse(side * 1.0, 0.28, 0.11, 0.24)], _mix(idt.skin, 0.9))


def _paint_head(cv: _Canvas, idt: Identity, lm: np.ndarray):
    outline = np.concatenate([lm[0:17], _cranium()])
    cv.paint([outline], idt.skin)
    cv.shade([outline], 0.22, thickness=0.3, blur=0.12)  # roundness: the rim falls off
    return outline


def _paint_hair(cv: _Canvas, idt: Identity, rng: np.random.Generator | None):
    hl = idt.hairline + (0.14 if idt.hair_style == "bangs" else 0.0)
    xs = np.linspace(-0.9, 0.9, 30)
    wave = 0.03 * np.sin(xs * 9 + (rng.uniform(0, 6) if rng is not None else 0.0))
    edge = np.stack([xs, hl + 0.5 * xs ** 2 * (1 - 0.5 * (idt.hair_style == "bangs")) + wave], 1)
    sideburns = [[-1.07, 0.02], [-0.93, 0.0]], [[0.93, 0.0], [1.07, 0.02]]
    cap = np.concatenate([_cranium(1.07) + [0, -0.03], sideburns[0], edge, sideburns[1]])
    cv.paint([cap], idt.hair)
    cv.shade([edge], 0.25, thickness=0.08, blur=0.05)  # shadow under the hairline


def _paint_brows(cv: _Canvas, idt: Identity, p: dict):
    color = _mix(idt.hair, 0.6 * min(1.0, 0.3 / max(np.mean(idt.hair), 1e-3)))  # brows stay dark
    for side in (-1, 1):
        line = _brow_line(idt, p, side, 16)
        t = np.linspace(0, 1, 16)[:, None]
        half = idt.brow_thickness * (0.6 - 0.35 * t)
        poly = np.concatenate([line + [0, -1] * half, (line + [0, 1] * half)[::-1]])
        cv.paint([poly], color, opacity=0.92, blur=0.008)


def _paint_eyes(cv: _Canvas, idt: Identity, p: dict):
    # The white of the eye lies in the socket's shade: brighter than the skin, far from white on
    # dark skin (as in photos exposed for the face; Haar's eye band needs it darker than the cheeks).
    sclera = tuple(float(c) for c in np.asarray(idt.skin) + 0.55 * (0.88 - np.asarray(idt.skin)))
    for side in (-1, 1):
        _paint_eye(cv, idt, p, side, sclera)


def _paint_eye(cv: _Canvas, idt: Identity, p: dict, side: int, sclera: tuple):
    upper, lower = _eye_lids(idt, p, side)
    cx, r = side * idt.eye_spacing, 0.068
    socket = 0.32 + 0.2 * max(p["eye_open"] - 1, 0)  # wide eyes bare more of the dark socket
    cv.shade([_ellipse(cx - side * 0.03, -0.06, 0.26, 0.17)], socket, blur=0.07)
    cv.shade([upper + [0, -0.055]], 0.25, thickness=0.02, blur=0.01)  # lid crease
    eye = np.concatenate([upper, lower[::-1]])
    cv.paint([eye], sclera)
    clip = cv.mask([eye])
    cv.paint([upper + [0, 0.015]], _mix(idt.skin, 0.5), opacity=0.5, thickness=0.04, blur=0.015, clip=clip)
    cv.paint([_ellipse(cx, -0.012, r, r)], idt.iris, clip=clip)
    cv.paint([_ellipse(cx, -0.012, 0.4 * r, 0.4 * r)], (0.03, 0.03, 0.03), clip=clip)
    cv.paint([_ellipse(cx + 0.02, -0.035, 0.014, 0.014)], (1, 1, 1), opacity=0.8, clip=clip)
    cv.paint([upper], (0.08, 0.06, 0.05), thickness=0.028)  # lashes
    cv.shade([lower], 0.3, thickness=0.012)
    cv.shade([lower + [0, 0.05]], 0.12 + 0.2 * p["lower_lid"], thickness=0.03, blur=0.02)


def _paint_nose(cv: _Canvas, idt: Identity, p: dict, lm: np.ndarray):
    nl, nw = idt.nose_length, idt.nose_width
    cv.shade([np.array([[0, 0.02], [0, nl - 0.06]])], -0.2, thickness=0.07, blur=0.04)  # bridge
    for side in (-1, 1):
        side_line = np.array([[side * 0.12, -0.03], [side * 0.13, nl - 0.12]])
        cv.shade([side_line], 0.14, thickness=0.06, blur=0.05)
        ala = _ellipse(side * (nw - 0.06), lm[31, 1] - 0.04, 0.065, 0.065, 16,
                       np.pi / 2 - side * np.pi / 2 * 1.1, np.pi / 2 + side * np.pi * 0.55)
        cv.shade([ala], 0.4, thickness=0.025, blur=0.01)
        cv.paint([_ellipse(side * 0.45 * nw, lm[33, 1] - 0.025, 0.045, 0.02)], _mix(idt.skin, 0.25),
                 blur=0.008)
        if p["wrinkle"] > 0.05:
            for k in range(3):
                y = 0.12 + 0.07 * k
                seg = np.array([[side * 0.03, y], [side * 0.13, y - 0.03]])
                cv.shade([seg], 0.45 * min(p["wrinkle"], 1.0), thickness=0.018, blur=0.008)
    cv.shade([_ellipse(0, nl - 0.04, 0.05, 0.045)], -0.25, blur=0.02)  # tip highlight
    cv.shade([_ellipse(0, lm[33, 1] + 0.05, 0.15, 0.035)], 0.18, blur=0.03)  # shadow under nose


def _paint_cheeks_and_folds(cv: _Canvas, idt: Identity, p: dict, lm: np.ndarray):
    for side in (-1, 1):
        cheek = _ellipse(side * 0.52, 0.45 - 0.08 * p["cheek"], 0.2, 0.14)  # raised and lit in a smile
        cv.shade([cheek], -(0.06 + 0.1 * p["cheek"]), blur=0.08)
        top = np.array([side * (idt.nose_width + 0.03), lm[31, 1] - 0.02])
        corner = lm[48 if side < 0 else 54]
        bottom = corner + [side * 0.09, 0.1]
        mid = (top + bottom) / 2 + [side * 0.07, 0]
        fold = np.array([top, mid, bottom])
        cv.shade([_smooth(fold)], 0.08 + 0.3 * min(p["fold"], 1.2), thickness=0.022, blur=0.015)


def _smooth(pts: np.ndarray, n: int = 16) -> np.ndarray:
    """A quadratic Bezier through three control points."""
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * pts[0] + 2 * t * (1 - t) * pts[1] + t ** 2 * pts[2]


def _paint_wrinkles(cv: _Canvas, p: dict):
    if p["frown"] > 0.05:
        for side in (-1, 1):
            line = np.array([[side * 0.05, -0.38], [side * 0.07, -0.18]])
            cv.shade([line], 0.4 * min(p["frown"], 1.0), thickness=0.02, blur=0.01)
    if p["forehead"] > 0.05:
        for k in range(3):
            y = -0.56 - 0.09 * k
            arc = _ellipse(0, y + 0.3, 0.45, 0.3, 16, -0.8 * np.pi, -0.2 * np.pi)
            cv.shade([arc], 0.25 * min(p["forehead"], 1.0), thickness=0.015, blur=0.01)


def _paint_mouth(cv: _Canvas, idt: Identity, p: dict):
    ou, ol, iu, il = _lips(idt, p)
    _, _, line = _mouth_frame(idt, p)
    cv.shade([_ellipse(0, ol[len(ol) // 2, 1] + 0.07, 0.16, 0.045)], 0.18, blur=0.035)  # under the lip
    lips = np.concatenate([ou, ol[::-1]])
    cv.paint([lips], _mix(idt.skin, (0.78, 0.5, 0.5)), blur=0.006)
    gap = il[:, 1] - iu[:, 1]
    if gap.max() > 0.012:
        inner = np.concatenate([iu, il[::-1]])
        cv.paint([inner], (0.22, 0.06, 0.06))
        if p["teeth"] > 0.3:
            clip = cv.mask([inner])
            teeth = np.concatenate([iu + [0, -0.02], (iu + [0, min(0.07, 0.5 * gap.max() + 0.015)])[::-1]])
            cv.paint([teeth], (0.9, 0.88, 0.82), clip=clip)
    else:  # closed: the line between the lips
        cv.paint([_curve(iu[0, 0], iu[-1, 0], line, 24)], (0.2, 0.07, 0.07), opacity=0.8, thickness=0.018)
    if p["contempt"] > 0.1:  # the dimple beside the raised corner
        c = ou[-1]
        cv.shade([_smooth(np.array([c + [0.02, -0.06], c + [0.06, -0.01], c + [0.03, 0.05]]))],
                 0.4 * p["contempt"], thickness=0.02, blur=0.01)


def draw_face(expression: str, identity: Identity, size: int = 256, color: bool = False, rng=None,
              angle_deg: float = 0.0, *, intensity: float = 1.0, width: int | None = None,
              face_scale: float = 1.0, noise: float = 0.008):
    """Draw one face; returns (uint8 image, (68, 2) float32 iBUG landmarks as pixel x, y).

    The image is `size` high and `width` (default `size`) wide, grey (H, W) or RGB (H, W, 3).
    `rng` adds per-take variation (expression strength, pose, lighting, exposure, and sensor
    noise of std `noise` x 255; 0 keeps lossless files small); without it the drawing is the
    exact template. `intensity` scales the expression (0 = neutral); `face_scale` the face
    within the frame.
    """
    params = expression_params(expression, intensity, rng)
    jitter = (lambda lo, hi: rng.uniform(lo, hi)) if rng is not None else (lambda lo, hi: (lo + hi) / 2)
    cv = _place(size, width or size, identity.face_width * face_scale, angle_deg, jitter, color)
    lm = canonical_landmarks(identity, params)
    _paint_face(cv, identity, params, lm, light=jitter(-1, 1), rng=rng)
    return _finish(cv.img, size, rng, noise), cv.px(lm).astype(np.float32)


def _place(height: int, width: int, face_scale: float, angle_deg: float, jitter, color: bool) -> _Canvas:
    """Canvas with the face's scale, position and roll (eye midpoint at 43% of the height)."""
    scale = 0.235 * height * face_scale * jitter(0.95, 1.05)
    center = (width / 2 + height * jitter(-0.02, 0.02), height * (0.43 + jitter(-0.015, 0.015)))
    return _Canvas(height, width, center, scale, angle_deg + 3 * jitter(-1, 1), color)


def _paint_face(cv: _Canvas, identity: Identity, params: dict, lm: np.ndarray, light: float, rng):
    """Back to front: background, body, head, shading, features, hair."""
    _paint_background(cv, identity, light)
    _paint_body(cv, identity, lm)
    _paint_head(cv, identity, lm)
    if light:  # light from one side
        cv.shade([_ellipse(np.sign(light) * 0.7, 0.3, 0.6, 1.4)], 0.12 * abs(light), blur=0.3)
    _paint_cheeks_and_folds(cv, identity, params, lm)
    _paint_wrinkles(cv, params)
    _paint_nose(cv, identity, params, lm)
    _paint_mouth(cv, identity, params)
    _paint_eyes(cv, identity, params)
    _paint_brows(cv, identity, params)
    _paint_hair(cv, identity, rng)


def _finish(img: np.ndarray, size: int, rng, noise: float) -> np.ndarray:
    img = cv2.GaussianBlur(img, (0, 0), 0.6 * size / 256)  # (H, W, 1) comes back as (H, W)
    if rng is not None:  # exposure and sensor noise
        img *= rng.uniform(0.9, 1.08)
        if noise > 0:
            img += rng.standard_normal(img.shape, dtype=np.float32) * noise
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def draw_photo(width: int, height: int, face_side: int, expressions: tuple[str, ...] = ("happy", "sad"),
               seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """An RGB photo of `width` x `height` (a smooth two-tone background: texture makes Haar find
    false faces at full size, which would leave nothing to compare) with one drawn face
    of `face_side` pixels per expression, side by side in its upper half, at a realistic
    share of a camera frame; also each face's top-left corner. Big photos for the reduced
    detection path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    canvas = np.stack([60 + 120 * x / width, 80 + 90 * y / height, np.full_like(x, 140)], -1).astype(np.uint8)
    corners = []
    for k, expression in enumerate(expressions):
        x0 = int(width * (0.08 + k * 0.9 / max(1, len(expressions))))
        y0 = int(height * (0.12 + 0.1 * (k % 2)))
        face, _ = draw_face(expression, identity_for(f"photo-{seed}-{k}", seed), face_side, color=True, rng=rng,
                            face_scale=0.85)
        canvas[y0:y0 + face_side, x0:x0 + face_side] = face[:height - y0, :width - x0]
        corners.append((x0, y0))
    return canvas, corners
