"""align_face on a real face: eyes level, features inside the crop, geometry as configured.

"Level" is checked twice: on the landmarks align_face returns (its own matrix), and
independently by detecting the face again in the output and re-running the landmarker.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fer_ray.config import COLORS, FaceConfig
from fer_ray.vision.align import (
    align_face,
    apply_affine,
    eye_angle_degrees,
    eye_centres,
    eye_distance,
    eyes_crop_matrix,
    oversampling,
)
from fer_ray.vision.detect import create_detector


def relandmark(face: np.ndarray, cfg: FaceConfig, detector, landmarker) -> np.ndarray:
    """Landmarks found afresh in an aligned face, in its own pixel coordinates.

    The crop is resampled to its true aspect (crop_width : crop_height; align_face
    squeezes it into a square, as the seed did) and enlarged to about 190 px wide, so
    the detector sees an ordinary upright face.
    """
    width = 192
    height = int(round(width * cfg.crop_height / cfg.crop_width))
    big = cv2.resize(face, (width, height), interpolation=cv2.INTER_CUBIC)
    boxes, _ = detector.detect(big)
    assert len(boxes) == 1, "the aligned face is not found again"
    points = landmarker(big, boxes)[0].astype(np.float64)
    scale = np.array([width / face.shape[1], height / face.shape[0]])
    return (points + 0.5) / scale - 0.5


def assert_aligned(face, crop_points, cfg, detector, landmarker):
    size = cfg.size
    assert face.shape[:2] == (size, size) and face.dtype == np.uint8
    # Level, by the returned landmarks ...
    assert abs(eye_angle_degrees(crop_points)) < 1.0
    # ... and by finding the eyes again in the pixels.
    found = relandmark(face, cfg, detector, landmarker)
    assert abs(eye_angle_degrees(found)) < 1.0
    # The returned landmarks are where the features really are (within 3% of the crop).
    assert np.abs(found[17:] - crop_points[17:]).mean() < 0.03 * size
    # Both eyes and the whole mouth are inside the crop.
    features = crop_points[36:68]
    assert (features >= 0).all() and (features <= size - 1).all()


@pytest.mark.parametrize("size", [48, 96])
def test_astronaut_eyes_level_and_features_inside(astronaut, astronaut_face, hog_detector,
                                                  landmarker, size):
    _, points = astronaut_face
    assert abs(eye_angle_degrees(points)) > 2  # her head is tilted: there is work to do
    cfg = FaceConfig(size=size, color="rgb")
    face, crop_points = align_face(astronaut, points, cfg)
    assert face.shape == (size, size, 3)
    assert_aligned(face, crop_points, cfg, hog_detector, landmarker)


@pytest.mark.parametrize("degrees, detector_name", [(15, "dlib_hog"), (15, "haar"), (-15, "haar")])
def test_rotated_face_is_levelled(astronaut, astronaut_face, rotate, landmarker, hog_detector,
                                  degrees, detector_name):
    tilted = rotate(astronaut, degrees)
    boxes, _ = create_detector(detector_name).detect(tilted)
    assert len(boxes) == 1
    points = landmarker(tilted, boxes)[0]
    # The tilt is seen: turning the picture counter-clockwise raises the right eye.
    original = eye_angle_degrees(astronaut_face[1])
    assert eye_angle_degrees(points) == pytest.approx(original - degrees, abs=2.0)
    cfg = FaceConfig(size=96, color="rgb")
    face, crop_points = align_face(tilted, points, cfg)
    assert_aligned(face, crop_points, cfg, hog_detector, landmarker)


def test_crop_geometry_follows_the_config(astronaut_face):
    _, points = astronaut_face
    for cfg in (FaceConfig(), FaceConfig(size=64, crop_width=2.5, crop_height=2.5, eye_row=0.4)):
        matrix = eyes_crop_matrix(points, cfg)
        left, right = eye_centres(apply_affine(matrix, points))
        midpoint = (left + right) / 2
        # Pixel centres sit at integers: the middle of a 48 px row is 23.5.
        assert midpoint[0] == pytest.approx(cfg.size / 2 - 0.5, abs=1e-3)
        assert midpoint[1] == pytest.approx(cfg.eye_row * cfg.size - 0.5, abs=1e-3)
        # crop_width eye distances fill the output width ...
        assert right[0] - left[0] == pytest.approx(cfg.size / cfg.crop_width, rel=1e-4)
        # ... and crop_height eye distances its height (one d at right angles to the eyes).
        source_left, source_right = eye_centres(points)
        across = source_right - source_left
        down = np.array([-across[1], across[0]])
        start = (source_left + source_right) / 2
        moved = apply_affine(matrix, [start, start + down])
        np.testing.assert_allclose(moved[1] - moved[0], [0, cfg.size / cfg.crop_height], atol=1e-3)


def test_rgb_and_gray_outputs(astronaut, astronaut_face):
    _, points = astronaut_face
    gray, gray_points = align_face(astronaut, points, FaceConfig(color="gray"))
    rgb, rgb_points = align_face(astronaut, points, FaceConfig(color="rgb"))
    assert gray.shape == (48, 48) and rgb.shape == (48, 48, 3)
    np.testing.assert_array_equal(gray_points, rgb_points)
    assert np.abs(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int) - gray).mean() < 2
    grey_in = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    from_grey, _ = align_face(grey_in, points, FaceConfig(color="rgb"))
    assert from_grey.shape == (48, 48, 3)
    assert (from_grey[..., 0] == from_grey[..., 2]).all()


def test_box_crop_of_an_already_cropped_tilted_face(astronaut, astronaut_face, rotate,
                                                    landmarker, hog_detector):
    """FER2013-like input: a small tilted face crop, the whole image is the box."""
    box, _ = astronaut_face
    x0, y0 = int(box[0]) - 25, int(box[1]) - 20
    side = int(box[2] - box[0]) + 50
    crop = rotate(cv2.cvtColor(astronaut[y0:y0 + side, x0:x0 + side], cv2.COLOR_RGB2GRAY), 10)
    small = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    whole = np.array([0, 0, 48, 48], np.float32)
    points = landmarker(small, whole[None])[0]
    assert abs(eye_angle_degrees(points)) > 5
    cfg = FaceConfig(size=96)
    face, crop_points = align_face(small, points, cfg, crop="box", box=whole)
    assert face.shape == (96, 96)
    assert abs(eye_angle_degrees(crop_points)) < 1.0
    # Independent check: the landmarker, given the same whole-image box, agrees.
    found = landmarker(face, np.array([[0, 0, 96, 96]], np.float32))[0]
    assert abs(eye_angle_degrees(found)) < 1.5


def test_box_crop_without_tilt_is_the_identity():
    """Level eyes and a 48x48 box to 48x48: the pixels come back unchanged."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    points = np.tile([24.0, 30.0], (68, 1))
    points[36:42], points[42:48] = (15.0, 18.0), (33.0, 18.0)
    face, crop_points = align_face(image, points, FaceConfig(smooth=False), crop="box",
                                   box=np.array([0, 0, 48, 48]))
    np.testing.assert_array_equal(face, image)
    np.testing.assert_allclose(crop_points, points, atol=1e-4)


def test_outside_the_image_is_border_replicated(astronaut, astronaut_face):
    """A face at the top-left corner: the window leaves the image, nothing is black."""
    box, points = astronaut_face
    x0, y0 = int(box[0]) + 10, int(box[1]) + 10  # cut through the face
    cornered = np.maximum(astronaut[y0:, x0:], 40)  # no pixel darker than 40
    shifted = points - [x0, y0]
    cfg = FaceConfig(smooth=False)
    matrix = eyes_crop_matrix(shifted, cfg)
    corner = apply_affine(cv2.invertAffineTransform(matrix), [[0, 0]])[0]
    assert (corner < 0).all()  # the output's top-left pixel comes from outside the image
    face, _ = align_face(cornered, shifted, cfg)
    assert face.min() >= 39  # a constant (black) border would show as 0


def test_shrinking_is_area_averaged():
    """A 1 px checkerboard shrunk ~14x must come out flat grey, not aliased stripes."""
    board = ((np.indices((1000, 1000)).sum(axis=0) % 2) * 255).astype(np.uint8)
    points = np.tile([500.0, 520.0], (68, 1))
    points[36:42], points[42:48] = (400.0, 400.0), (600.0, 410.0)
    cfg = FaceConfig(smooth=False)
    assert oversampling(eyes_crop_matrix(points, cfg), cfg.size) > 10
    face, _ = align_face(board, points, cfg)
    assert abs(face.mean() - 127.5) < 3 and face.std() < 3
    # The control: one plain bilinear warp of the same window aliases badly.
    naive = cv2.warpAffine(board, eyes_crop_matrix(points, cfg), (48, 48), flags=cv2.INTER_LINEAR)
    assert naive.std() > 20


def test_smoothing_takes_off_fine_detail(astronaut, astronaut_face):
    _, points = astronaut_face
    sharp, _ = align_face(astronaut, points, FaceConfig(smooth=False, size=96))
    smooth, _ = align_face(astronaut, points, FaceConfig(smooth=True, size=96))
    detail = lambda face: cv2.Laplacian(face.astype(np.float32), cv2.CV_32F).var()  # noqa: E731
    assert detail(smooth) < 0.97 * detail(sharp)
    assert np.abs(smooth.astype(int) - sharp).mean() < 4  # edge-preserving: same picture


def test_eye_helpers():
    points = np.zeros((68, 2))
    points[36:42] = [[0, 0], [4, 0], [1, 2], [2, -1], [1, 1], [1, 0]]  # mean (1.5, 1/3)
    points[42:48] = [10.0, 10.0]
    left, right = eye_centres(points)
    np.testing.assert_allclose(left, [1.5, 1 / 3])
    np.testing.assert_allclose(right, [10, 10])
    points[36:42] = 0.0
    assert eye_angle_degrees(points) == pytest.approx(45.0, abs=1e-9)  # right eye lower
    assert eye_distance(points) == pytest.approx(10 * math.sqrt(2))
    points[42:48] = [-10.0, 0.0]  # eyes swapped: the angle says so, it does not wrap silently
    assert abs(eye_angle_degrees(points)) == pytest.approx(180.0)


@pytest.mark.parametrize("color", COLORS)
def test_faces_have_the_channels_their_colour_says(color, astronaut, astronaut_face):
    """FaceConfig.channels (the faces/ shape, the model check) is what align_face makes."""
    cfg = FaceConfig(color=color, size=32)
    face, _ = align_face(astronaut, astronaut_face[1], cfg)
    channels = face.shape[2] if face.ndim == 3 else 1
    assert face.shape[:2] == (32, 32) and channels == cfg.channels


def test_bad_arguments(astronaut, astronaut_face):
    _, points = astronaut_face
    with pytest.raises(ValueError, match="eyes, box"):
        align_face(astronaut, points, FaceConfig(), crop="middle")
    with pytest.raises(ValueError, match="needs the box"):
        align_face(astronaut, points, FaceConfig(), crop="box")
    with pytest.raises(ValueError, match="gray, rgb"):
        align_face(astronaut, points, FaceConfig(color="bgr"))


@pytest.mark.parametrize("color", COLORS)
def test_the_margin_crop_maps_landmarks_as_its_pixels_move(color):
    """A bright dot drawn in the photo lands in the crop where the returned landmark says,
    also when the window leaves the image (filled, not shifted)."""
    cfg = FaceConfig(crop="margin", margin=10, size=64, color=color, smooth=False)
    image = np.full((120, 160, 3), 40, np.uint8)
    for box, dot in [((50, 30, 110, 100), (70.0, 60.0)), ((-20, -15, 40, 45), (5.0, 10.0))]:
        photo = image.copy()
        cv2.circle(photo, (int(dot[0]), int(dot[1])), 2, (255, 255, 255), -1)
        points = np.tile(np.array(dot, np.float32), (68, 1))
        face, crop_points = align_face(photo, points, cfg, crop="margin", box=box)
        grey = face if face.ndim == 2 else face[..., 0]
        ys, xs = np.nonzero(grey > 150)
        centre = np.array([xs.mean(), ys.mean()])
        assert face.shape[:2] == (64, 64) and np.abs(centre - crop_points[0]).max() < 0.75, (box, centre)
