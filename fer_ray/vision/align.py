"""Seed 001's face alignment, with its defects fixed.

Recipe: rotate so the eye line is level, crop a window crop_width*d wide and
crop_height*d tall (d = eye distance) with the eye line at eye_row of its height,
bilateral filter (d=4, sigmaColor=15, sigmaSpace=15), resize to size x size.
Fixed: the window follows the face (the seed centred it on the image), rotation is
about the eye midpoint (the seed used a hard-coded (240, 240)), the angle uses atan2
and real pi (the seed used 3.14).

Rotation, crop and resize are one affine matrix from source to output pixels and
one cv2.warpAffine (plus an exact k x k box average when the face is shrunk, see
warp_face), so the landmarks are mapped by exactly the transform the pixels went
through, and pixels outside the image are border-replicated by the same warp.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from fer_ray.config import COLORS, FaceConfig
from fer_ray.face68 import LEFT_EYE, RIGHT_EYE

BILATERAL = dict(d=4, sigmaColor=15, sigmaSpace=15)  # seed 001's values
# Cap on the side of warp_face's intermediate grid (12 MiB RGB). Only windows over
# about 2048 source px (eye distance > ~640 px) exceed it; they are slightly aliased.
MAX_WORK_SIDE = 2048


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) eye centres in image order: mean of points 36-41 and 42-47."""
    points = np.asarray(landmarks, np.float64)
    return points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)


def eye_angle_degrees(landmarks: np.ndarray) -> float:
    """Angle of the left->right eye line against the x axis; positive = right eye lower."""
    left, right = eye_centres(landmarks)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def eye_distance(landmarks: np.ndarray) -> float:
    left, right = eye_centres(landmarks)
    return float(np.hypot(*(right - left)))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N,2) points with a 2x3 affine matrix."""
    points = np.asarray(points, np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def window_matrix(centre, angle_rad: float, window: tuple[float, float],
                  anchor: tuple[float, float], size: int) -> np.ndarray:
    """Source -> output (size x size) matrix for a rotated window.

    The window (width, height in source pixels) is rotated by angle_rad about
    `centre`, and `centre` lands at `anchor` (fractions of the output width, height).
    """
    cos, sin = math.cos(angle_rad), math.sin(angle_rad)
    scale_x, scale_y = size / window[0], size / window[1]
    # Rotate by -angle (so the eye line becomes horizontal), then scale each axis.
    linear = np.array([[scale_x * cos, scale_x * sin], [-scale_y * sin, scale_y * cos]])
    target = np.array([anchor[0] * size, anchor[1] * size]) - 0.5  # pixel centres at integers
    return np.hstack([linear, (target - linear @ np.asarray(centre, np.float64))[:, None]])


def eyes_crop_matrix(landmarks: np.ndarray, cfg: FaceConfig) -> np.ndarray:
    """Window of crop_width*d x crop_height*d about the eye midpoint, eye line at eye_row."""
    left, right = eye_centres(landmarks)
    distance = max(eye_distance(landmarks), 1.0)  # degenerate landmarks must not divide by 0
    angle = math.atan2(right[1] - left[1], right[0] - left[0])
    window = (cfg.crop_width * distance, cfg.crop_height * distance)
    return window_matrix((left + right) / 2, angle, window, (0.5, cfg.eye_row), cfg.size)


def box_crop_matrix(landmarks: np.ndarray, box, cfg: FaceConfig) -> np.ndarray:
    """The given box, rotated about its centre so the eye line is level."""
    x0, y0, x1, y1 = (float(v) for v in box)
    angle = math.radians(eye_angle_degrees(landmarks))
    window = (max(x1 - x0, 1.0), max(y1 - y0, 1.0))
    # Box edges are pixel borders (x1 exclusive); its centre in pixel-centre
    # coordinates is half a pixel up-left, so an unrotated 48x48 box maps 1:1.
    centre = ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)
    return window_matrix(centre, angle, window, (0.5, 0.5), cfg.size)


def align_face(image: np.ndarray, landmarks: np.ndarray, cfg: FaceConfig,
               crop: str = "eyes", box=None) -> tuple[np.ndarray, np.ndarray]:
    """Aligned face (size,size) grey or (size,size,3) RGB per cfg.color, and the 68
    landmarks in output-crop pixels.

    crop="eyes": the window is placed from the eyes (photos, video frames).
    crop="box": the window is `box` itself (datasets that are already face crops).
    crop="margin": `box` made square and widened by cfg.margin, not rotated (margin_crop).
    """
    if crop == "margin":
        if box is None:
            raise ValueError("align_face: crop='margin' needs the box")
        face, matrix = margin_crop(image, box, cfg)
        return face, apply_affine(matrix, landmarks)
    if crop == "eyes":
        matrix = eyes_crop_matrix(landmarks, cfg)
    elif crop == "box":
        if box is None:
            raise ValueError("align_face: crop='box' needs the box")
        matrix = box_crop_matrix(landmarks, box, cfg)
    else:
        raise ValueError(f"align_face: crop {crop!r} is not valid; choose one of: eyes, box, margin")
    face = warp_face(image, matrix, cfg.size, cfg.color, cfg.smooth)
    return face, apply_affine(matrix, landmarks)


def square_box(box) -> tuple[int, int, int]:
    """(x, y, side) of a detector box made square by growing its shorter side about its
    centre, in whole pixels (the fer package's `tosquare`)."""
    x, y = int(round(float(box[0]))), int(round(float(box[1])))
    width, height = int(round(float(box[2]))) - x, int(round(float(box[3]))) - y
    if height > width:
        x -= (height - width) // 2
    else:
        y -= (width - height) // 2
    return x, y, max(width, height, 1)


def margin_crop(image: np.ndarray, box, cfg: FaceConfig) -> tuple[np.ndarray, np.ndarray]:
    """The face as the fer package feeds its mini-Xception: the square box widened by
    cfg.margin pixels a side, in cfg.color, resized (bilinear) to cfg.size; no rotation.
    Where the window leaves the image it is filled with the mean of the image's bottom two
    rows (fer pads 40 px so; beyond those 40 px fer shortens the window, this fills on).
    Returns (face, the source -> face matrix); the landmarks are mapped by it."""
    x, y, side = square_box(box)
    x0, y0, side = x - cfg.margin, y - cfg.margin, side + 2 * cfg.margin
    height, width = image.shape[:2]
    fill = convert_color(image[max(height - 2, 0):], cfg.color).reshape(-1, cfg.channels).mean(axis=0)
    window = np.empty((side, side, cfg.channels), np.uint8)
    window[:] = np.round(fill).astype(np.uint8)
    top, left, bottom, right = max(y0, 0), max(x0, 0), min(y0 + side, height), min(x0 + side, width)
    if top < bottom and left < right:
        inside = convert_color(image[top:bottom, left:right], cfg.color)
        window[top - y0:bottom - y0, left - x0:right - x0] = inside.reshape(bottom - top, right - left, -1)
    window = window[..., 0] if cfg.channels == 1 else window
    if cfg.smooth:
        window = cv2.bilateralFilter(window, **BILATERAL)
    scale = cfg.size / side
    # cv2.resize's bilinear sampling: output pixel centre u samples (u + 0.5) / scale - 0.5
    matrix = np.array([[scale, 0.0, (0.5 - x0) * scale - 0.5], [0.0, scale, (0.5 - y0) * scale - 0.5]])
    face = cv2.resize(window, (cfg.size, cfg.size), interpolation=cv2.INTER_LINEAR)
    return face, matrix


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int, color: str = "gray",
              smooth: bool = True) -> np.ndarray:
    """Resample the window given by `matrix` into size x size, in `color`.

    When the window is no larger than the output this is one warpAffine. When it
    shrinks by s > 1, the warp goes to a k-times finer grid (k = ceil(s), about the
    source's own resolution) and a k x k box average (INTER_AREA with an integer
    factor) brings it to size: area-quality anti-aliasing, which warpAffine alone
    cannot give.

    Smoothing runs on that grid, i.e. at the crop's native resolution, as in the
    seed (it filtered the crop, then resized to 48). The filter's d=4 and
    sigmaSpace=15 are in pixels and target noise at the source's pixel scale
    (sensor noise, JPEG blocks); run on the 48x48 output they would instead blur
    features several source pixels wide, more the larger the source face.
    """
    k = oversampling(matrix, size)
    grid = _scale_output(matrix, k) if k > 1 else matrix
    work = cv2.warpAffine(image, grid, (size * k, size * k), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    work = convert_color(work, color)  # before filtering: grey filters 3x faster
    if smooth:
        work = cv2.bilateralFilter(work, **BILATERAL)
    return cv2.resize(work, (size, size), interpolation=cv2.INTER_AREA) if k > 1 else work


def oversampling(matrix: np.ndarray, size: int) -> int:
    """Integer k so that one work-grid pixel is at most about one source pixel.

    The shrink factor is the source-pixel length of an output pixel along its longer
    axis (the matrix's column norms of the inverse). Capped so that the grid stays
    at most MAX_WORK_SIDE pixels wide.
    """
    shrink = float(np.max(np.linalg.norm(np.linalg.inv(matrix[:, :2]), axis=0)))
    return int(min(max(math.ceil(shrink - 1e-6), 1), max(MAX_WORK_SIDE // size, 1)))


def _scale_output(matrix: np.ndarray, k: int) -> np.ndarray:
    """Matrix into a k x finer grid whose k x k blocks average to the output pixels.

    Output pixel x (centre at x) covers grid pixels k*x .. k*x+k-1, centred at
    k*x + (k-1)/2.
    """
    return matrix * k + np.array([[0, 0, (k - 1) / 2], [0, 0, (k - 1) / 2]])


def convert_color(face: np.ndarray, color: str) -> np.ndarray:
    if color == "gray":
        return face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    if color == "rgb":
        return cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) if face.ndim == 2 else face
    raise ValueError(f"face.color: {color!r} is not valid; choose one of: {', '.join(COLORS)}")
