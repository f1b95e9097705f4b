"""Seed 000's mixed-emotion fusion: two expressions of one person -> one face.

Pure numpy/OpenCV, no Ray. Faces are aligned crops of one shape, grey (H, W) or RGB
(H, W, 3) uint8, with 68 landmarks in crop pixels. Every method first maps the second
face B onto the first face A with a similarity transform fitted on the landmarks that
expressions barely move (nose, eye corners), so the two faces overlap before they mix.

- region: A's upper face over B's lower face. The seam is a horizontal line between the
  bottom of the nose and the upper lip (from both faces' landmarks), feathered by a linear ramp.
- weighted: alpha * A + (1 - alpha) * B.
- pca: weights from the principal eigenvector of the 2x2 covariance of the two images'
  pixel vectors, normalised to sum 1 (standard PCA image fusion).

Each returns a `Fused`: the face, its landmarks and the soft weights (the share of the
fused pixels that came from A and from B).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fer_ray.config import FUSION_METHODS as METHODS
from fer_ray.face68 import N_POINTS, N_VALUES, NOSE_BOTTOM, STABLE_POINTS, UPPER_LIP_TOP
from fer_ray.vision.align import apply_affine


@dataclass
class Fused:
    face: np.ndarray        # uint8, shape of A
    landmarks: np.ndarray   # (68, 2) float32, crop pixels
    weights: tuple[float, float]  # share of A (primary) and B (secondary)


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 rotation + uniform scale + translation mapping `source` points onto `target`
    points in the least-squares sense (Umeyama's closed form, no reflection)."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    variance = (src_c ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(s) @ d) / variance) if variance > 0 else 1.0
    linear = scale * rotation
    return np.hstack([linear, (dst_mean - linear @ src_mean)[:, None]])


def align_onto(face_b: np.ndarray, landmarks_b: np.ndarray, landmarks_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B warped so its stable landmarks sit on A's; returns (face, landmarks) in A's frame."""
    matrix = similarity_matrix(landmarks_b[STABLE_POINTS], landmarks_a[STABLE_POINTS])
    height, width = face_b.shape[:2]
    warped = cv2.warpAffine(face_b, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped, apply_affine(matrix, landmarks_b)


def seam_row(landmarks_a: np.ndarray, landmarks_b: np.ndarray, position: float = 0.5) -> float:
    """Row of the seam: `position` of the way from the bottom of the nose down to the top of the
    upper lip, averaged over both faces (A's nose must stay above it, B's lip below it)."""
    nose = (landmarks_a[NOSE_BOTTOM, 1] + landmarks_b[NOSE_BOTTOM, 1]) / 2
    lip = (landmarks_a[UPPER_LIP_TOP, 1] + landmarks_b[UPPER_LIP_TOP, 1]) / 2
    return float(nose + position * (lip - nose))


def row_weights(rows: np.ndarray, seam: float, feather: float) -> np.ndarray:
    """Weight of the upper face at each row (pixel centres at integers): 1 above the seam,
    0 below, a linear ramp `feather` pixels wide centred on it (0.5 exactly on the seam)."""
    rows = np.asarray(rows, np.float64)
    if feather <= 0:
        return np.where(rows < seam, 1.0, np.where(rows > seam, 0.0, 0.5))
    return np.clip(0.5 - (rows - seam) / feather, 0.0, 1.0)


def region_mask(shape: tuple[int, ...], seam: float, feather: float) -> np.ndarray:
    """(H, W) or (H, W, 1) float mask of A's share, broadcastable against a face of `shape`."""
    column = row_weights(np.arange(shape[0]), seam, feather)[:, None]
    mask = np.repeat(column, shape[1], axis=1)
    return mask[:, :, None] if len(shape) == 3 else mask


def blend(face_a: np.ndarray, face_b: np.ndarray, weight_a) -> np.ndarray:
    """weight_a * A + (1 - weight_a) * B, rounded back to uint8 (exact for weights 0 and 1)."""
    mixed = weight_a * face_a.astype(np.float64) + (1.0 - weight_a) * face_b.astype(np.float64)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def fuse_region(face_a, face_b, landmarks_a, landmarks_b, feather: float, position: float = 0.5) -> Fused:
    aligned, points_b = align_onto(face_b, landmarks_b, landmarks_a)
    seam = seam_row(landmarks_a, points_b, position)
    mask = region_mask(face_a.shape, seam, feather)
    upper = row_weights(landmarks_a[:, 1], seam, feather)[:, None]  # landmarks follow their half
    points = (upper * landmarks_a + (1 - upper) * points_b).astype(np.float32)
    share = float(mask.mean())
    return Fused(blend(face_a, aligned, mask), points, (share, 1.0 - share))


def fuse_weighted(face_a, face_b, landmarks_a, landmarks_b, alpha: float) -> Fused:
    aligned, points_b = align_onto(face_b, landmarks_b, landmarks_a)
    points = (alpha * landmarks_a + (1 - alpha) * points_b).astype(np.float32)
    return Fused(blend(face_a, aligned, alpha), points, (float(alpha), 1.0 - float(alpha)))


def pca_weights(face_a: np.ndarray, face_b: np.ndarray) -> tuple[float, float]:
    """The principal eigenvector of the two pixel vectors' 2x2 covariance, normalised to sum 1.

    Its components have one sign whenever the images are positively correlated (two photos
    of one face); the absolute values are used so a negative correlation cannot produce
    weights outside [0, 1]. Two constant images have no principal direction: (0.5, 0.5).
    """
    covariance = np.cov(np.stack([face_a.ravel(), face_b.ravel()]).astype(np.float64))
    values, vectors = np.linalg.eigh(covariance)
    principal = np.abs(vectors[:, int(np.argmax(values))])
    total = principal.sum()
    if not np.isfinite(total) or total == 0 or values.max() <= 0:
        return 0.5, 0.5
    return float(principal[0] / total), float(principal[1] / total)


def fuse_pca(face_a, face_b, landmarks_a, landmarks_b) -> Fused:
    aligned, points_b = align_onto(face_b, landmarks_b, landmarks_a)
    w_a, w_b = pca_weights(face_a, aligned)
    points = (w_a * landmarks_a + w_b * points_b).astype(np.float32)
    return Fused(blend(face_a, aligned, w_a), points, (w_a, w_b))


def fuse(method: str, face_a, face_b, landmarks_a, landmarks_b, *, alpha: float = 0.5,
         feather: float = 4.0, seam_position: float = 0.5) -> Fused:
    """Fuse A (primary, upper face) with B (secondary, lower face) by the named method."""
    a_points = np.asarray(landmarks_a, np.float32).reshape(N_POINTS, 2)
    b_points = np.asarray(landmarks_b, np.float32).reshape(N_POINTS, 2)
    if face_a.shape != face_b.shape:
        raise ValueError(f"faces differ in shape: {face_a.shape} vs {face_b.shape}")
    if method == "region":
        return fuse_region(face_a, face_b, a_points, b_points, feather, seam_position)
    if method == "weighted":
        return fuse_weighted(face_a, face_b, a_points, b_points, alpha)
    if method == "pca":
        return fuse_pca(face_a, face_b, a_points, b_points)
    raise ValueError(f"fusion method {method!r} is not valid; choose one of: {', '.join(METHODS)}")


def landmarks_problem(landmarks, shape: tuple[int, ...]) -> str:
    """'' when the 68 points can place a seam and fit an alignment, else what is wrong."""
    if landmarks is None:
        return "no landmarks"
    points = np.asarray(landmarks, np.float64)
    if points.size != N_VALUES:
        return f"{points.size} landmark values, expected {N_VALUES} ({N_POINTS} x, y pairs)"
    points = points.reshape(N_POINTS, 2)
    if not np.isfinite(points).all():
        return "landmarks contain NaN or infinite values"
    if np.ptp(points[STABLE_POINTS], axis=0).min() < 1.0:
        return "landmarks are degenerate (nose and eye points collapse to a line or a point)"
    if not 0 <= points[NOSE_BOTTOM, 1] < points[UPPER_LIP_TOP, 1] <= shape[0]:
        return "nose tip and upper lip are not in order inside the face"
    return ""
