"""dlib 68-point landmarks on a real face: inside the box, in anatomical order."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_ray.config import LANDMARKERS
from fer_ray.face68 import BROWS, EYE_CORNERS, EYES, JAW, LEFT_EYE, NOSE_BOTTOM, RIGHT_EYE, UPPER_LIP_TOP
from fer_ray.vision.landmarks import DlibLandmarker, create_landmarker

NOSE_TIP, CHIN = 30, 8


def test_shape_and_dtype(astronaut, astronaut_face, landmarker):
    box, _ = astronaut_face
    points = landmarker(astronaut, np.stack([box, box]))
    assert points.shape == (2, 68, 2) and points.dtype == np.float32
    assert landmarker(astronaut, np.zeros((0, 4), np.float32)).shape == (0, 68, 2)


def test_landmarks_inside_the_box_in_anatomical_order(astronaut_face):
    box, points = astronaut_face
    x0, y0, x1, y1 = box
    inner = points[17:]  # brows, nose, eyes, mouth
    assert (inner[:, 0] > x0).all() and (inner[:, 0] < x1).all()
    assert (inner[:, 1] > y0).all() and (inner[:, 1] < y1).all()
    margin = 0.15 * (x1 - x0)  # dlib's boxes may clip the jaw line a little
    assert (points[JAW, 0] > x0 - margin).all() and (points[JAW, 0] < x1 + margin).all()
    assert (points[JAW, 1] < y1 + margin).all()

    brows_y = points[BROWS, 1].mean()
    eyes_y = points[EYES, 1].mean()
    assert brows_y < eyes_y < points[NOSE_TIP, 1] < points[NOSE_BOTTOM, 1]
    assert points[NOSE_BOTTOM, 1] < points[UPPER_LIP_TOP, 1] < points[CHIN, 1]
    assert points[LEFT_EYE, 0].mean() < points[NOSE_TIP, 0] < points[RIGHT_EYE, 0].mean()
    assert points[48, 0] < points[54, 0]  # mouth corners, image left then right
    assert (np.diff(points[list(EYE_CORNERS), 0]) > 0).all()  # eye corners, image left to right
    assert points[0, 0] < points[16, 0]  # jaw runs left to right


def test_small_faces_get_sub_pixel_landmarks(astronaut, astronaut_face, landmarker):
    """A 48 px copy of the face: points are fractional and agree with the big face's."""
    box, points = astronaut_face
    x0, y0 = int(box[0]) - 15, int(box[1]) - 15
    side = int(box[2] - box[0]) + 30
    scale = 48 / side
    head = astronaut[y0:y0 + side, x0:x0 + side]
    small = cv2.resize(head, (48, 48), interpolation=cv2.INTER_AREA)
    found = landmarker(small, np.array([[0, 0, 48, 48]], np.float32))[0]
    expected = (points - [x0, y0] + 0.5) * scale - 0.5
    assert np.abs(found - np.rint(found)).max() > 0.05  # not whole pixels
    assert np.abs(found[17:] - expected[17:]).mean() < 0.75  # < 1.5% of the face


def test_landmark_model_can_be_given_as_a_uri(tmp_path, monkeypatch):
    from fer_ray.weights import dlib_predictor_path
    monkeypatch.setenv("FER_RAY_CACHE", str(tmp_path))
    model = tmp_path / "shape_predictor.dat"
    model.symlink_to(dlib_predictor_path())  # staged as a copy, read through the link
    DlibLandmarker(f"file://{model}")
    assert any(p.name == "shape_predictor.dat" for p in (tmp_path / "weights").rglob("*"))


def test_unknown_landmarker_lists_the_valid_names():
    with pytest.raises(ValueError, match="'mediapipe'.*dlib, fan, fan3d"):
        create_landmarker("mediapipe")


@pytest.mark.parametrize("name", LANDMARKERS)
def test_every_configured_landmarker_is_one_create_landmarker_builds(name, tmp_path):
    """What face.landmarker accepts, create_landmarker knows: given a missing file it asks
    for the weights instead of answering 'not valid'."""
    with pytest.raises(FileNotFoundError, match="face.landmark_model"):
        create_landmarker(name, model_path=str(tmp_path / "missing"))


def test_points_array_reads_dlib_points_exactly_negative_and_large_ones_included():
    import dlib

    from fer_ray.vision.landmarks import points_array

    values = [(-7, 3), (0, -12), (4093, 2999), (-1, -1)] + [(i * 37 - 600, 5 - i * 11) for i in range(64)]
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 10, 10), dlib.points([dlib.point(*v) for v in values]))
    got = points_array(shape)
    assert got.dtype == np.float64 and got.shape == (68, 2)
    assert np.array_equal(got, np.array([(p.x, p.y) for p in shape.parts()], np.float64))
