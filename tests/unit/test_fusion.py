"""Fusion methods (fer_ray.vision.fusion) on drawn faces with known landmarks; no Ray."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fer_ray.face68 import NOSE_BOTTOM, UPPER_LIP_TOP
from fer_ray.vision import fusion
from fer_ray.vision.align import apply_affine
from fer_ray.vision.synthetic_face import draw_face, identity_for

EYES = slice(36, 48)


def face(expression: str, color: bool = False, size: int = 96):
    return draw_face(expression, identity_for("fusion-test"), size, color=color)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float], centre) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(tuple(map(float, centre)), angle_deg, scale)
    matrix[:, 2] += shift
    return matrix


@pytest.mark.parametrize("color", [False, True])
def test_weighted_with_alpha_one_returns_the_first_face_exactly(color):
    (a, lm_a), (b, lm_b) = face("happy", color), face("surprise", color)
    fused = fusion.fuse("weighted", a, b, lm_a, lm_b, alpha=1.0)
    assert fused.face.dtype == np.uint8 and np.array_equal(fused.face, a)
    assert np.allclose(fused.landmarks, lm_a) and fused.weights == (1.0, 0.0)


def test_weighted_blends_by_alpha():
    (a, lm), (b, _) = face("happy"), face("anger")
    fused = fusion.fuse("weighted", a, b, lm, lm, alpha=0.25)  # same landmarks: alignment is the identity
    expected = np.rint(0.25 * a.astype(float) + 0.75 * b.astype(float))
    assert np.abs(fused.face.astype(float) - expected).max() <= 1


def test_pca_weights_are_the_normalised_principal_eigenvector():
    rng = np.random.default_rng(3)
    a = face("happy")[0]
    b = np.clip(0.6 * face("sad")[0] + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    covariance = np.cov(np.vstack([a.reshape(-1), b.reshape(-1)]).astype(float))
    values, vectors = np.linalg.eig(covariance)
    principal = vectors[:, np.argmax(values)]
    principal = principal * np.sign(principal.sum())
    assert fusion.pca_weights(a, b) == pytest.approx(tuple(principal / principal.sum()), abs=1e-9)


def test_pca_weights_of_a_face_and_its_half():
    """B = A / 2: covariance v * [[1, .5], [.5, .25]], principal eigenvector (1, .5) -> (2/3, 1/3)."""
    a = (face("fear")[0] // 2) * 2
    assert fusion.pca_weights(a, a // 2) == pytest.approx((2 / 3, 1 / 3), abs=1e-9)
    flat = np.full((8, 8), 7, np.uint8)
    assert fusion.pca_weights(flat, flat) == (0.5, 0.5)


def test_pca_fusion_uses_those_weights():
    (a, lm), (b, _) = face("happy"), face("anger")
    fused = fusion.fuse("pca", a, b, lm, lm)
    w_a, w_b = fusion.pca_weights(a, b)
    assert fused.weights == pytest.approx((w_a, w_b)) and sum(fused.weights) == pytest.approx(1.0)
    expected = np.rint(w_a * a.astype(float) + w_b * b.astype(float))
    assert np.abs(fused.face.astype(float) - expected).max() <= 1


@pytest.mark.parametrize("feather", [0.0, 6.0])
def test_region_seam_lies_at_the_landmark_row(feather):
    _, lm = face("neutral")
    upper, lower = np.full((96, 96), 200, np.uint8), np.full((96, 96), 40, np.uint8)
    fused = fusion.fuse("region", upper, lower, lm, lm, feather=feather, seam_position=0.5)
    seam = (lm[NOSE_BOTTOM, 1] + lm[UPPER_LIP_TOP, 1]) / 2
    profile = (fused.face[:, 48].astype(float) - 40) / 160  # the upper face's share, per row
    assert profile[: int(seam - feather / 2) - 1].min() == 1.0
    assert profile[int(math.ceil(seam + feather / 2)) + 1:].max() == 0.0
    rows = np.arange(96)
    crossing = np.interp(0.5, profile[::-1], rows[::-1])  # profile falls: interpolate reversed
    assert abs(crossing - seam) <= 0.5 + (0.5 if feather == 0 else 0.0)
    assert lm[NOSE_BOTTOM, 1] < seam < lm[UPPER_LIP_TOP, 1]


def test_region_keeps_upper_landmarks_of_the_first_face_and_lower_of_the_second():
    (a, lm_a), (b, lm_b) = face("surprise"), face("happy")
    fused = fusion.fuse("region", a, b, lm_a, lm_b, feather=4.0)
    assert np.allclose(fused.landmarks[17:27], lm_a[17:27], atol=1e-4)  # brows from A
    aligned_b = fusion.align_onto(b, lm_b, lm_a)[1]
    assert np.allclose(fused.landmarks[48:68], aligned_b[48:68], atol=1e-4)  # mouth from B
    assert 0.5 < fused.weights[0] < 0.8 and sum(fused.weights) == pytest.approx(1.0)


def test_alignment_maps_the_second_faces_eyes_onto_the_first_within_one_pixel():
    a, lm_a = face("neutral", size=128)
    b_expression, lm_expr = face("happy", size=128)  # same person, other expression (mouth differs)
    matrix = similarity(7.0, 1.1, (4.0, -3.0), lm_a[EYES].mean(axis=0))
    b = cv2.warpAffine(b_expression, matrix, (128, 128), borderMode=cv2.BORDER_REPLICATE)
    lm_b = apply_affine(matrix, lm_expr)
    aligned, lm_aligned = fusion.align_onto(b, lm_b, lm_a)
    assert np.abs(lm_aligned[EYES] - lm_a[EYES]).max() <= 1.0
    assert np.hypot(*(lm_aligned[EYES] - lm_a[EYES]).T).max() <= 1.0
    # the pixels moved with the points: the eye region of the aligned face matches A's
    x0, y0 = np.floor(lm_a[EYES].min(axis=0)).astype(int) - 3
    x1, y1 = np.ceil(lm_a[EYES].max(axis=0)).astype(int) + 3
    before = np.abs(b[y0:y1, x0:x1].astype(float) - a[y0:y1, x0:x1]).mean()
    after = np.abs(aligned[y0:y1, x0:x1].astype(float) - a[y0:y1, x0:x1]).mean()
    assert after < 0.35 * before


def test_similarity_matrix_recovers_a_known_transform():
    points = np.random.default_rng(0).uniform(0, 100, (20, 2))
    matrix = similarity(-12.0, 0.9, (5.0, 2.0), (50, 50))
    assert np.allclose(fusion.similarity_matrix(points, apply_affine(matrix, points)), matrix, atol=1e-4)


@pytest.mark.parametrize("method", fusion.METHODS)
def test_every_method_works_on_grey_and_colour_faces(method):
    for color in (False, True):
        (a, lm_a), (b, lm_b) = face("anger", color), face("sad", color)
        fused = fusion.fuse(method, a, b, lm_a, lm_b, alpha=0.5, feather=4.0)
        assert fused.face.shape == a.shape and fused.face.dtype == np.uint8
        assert fused.landmarks.shape == (68, 2) and np.isfinite(fused.landmarks).all()


def test_bad_arguments_are_named():
    (a, lm), (b, _) = face("anger"), face("sad", size=64)
    with pytest.raises(ValueError, match="differ in shape"):
        fusion.fuse("region", a, b, lm, lm)
    with pytest.raises(ValueError, match="choose one of: region, weighted, pca"):
        fusion.fuse("average", a, a, lm, lm)


def test_landmark_problems_are_described():
    _, lm = face("neutral")
    assert fusion.landmarks_problem(lm, (96, 96)) == ""
    assert "no landmarks" in fusion.landmarks_problem(None, (96, 96))
    assert "136" in fusion.landmarks_problem(lm[:10], (96, 96))
    with_nan = lm.copy()
    with_nan[5] = np.nan
    assert "NaN" in fusion.landmarks_problem(with_nan, (96, 96))
    assert "degenerate" in fusion.landmarks_problem(np.zeros((68, 2)), (96, 96))
    upside_down = lm.copy()
    upside_down[:, 1] = 96 - upside_down[:, 1]
    assert "not in order" in fusion.landmarks_problem(upside_down, (96, 96))
