"""Detectors on a real face: one face found, sensible boxes, filtering, ordering, errors."""
from __future__ import annotations

import numpy as np
import pytest

from fer_ray.config import DETECTORS
from fer_ray.vision.detect import create_detector, detect_followed, detect_near, full_image_box


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


@pytest.fixture(params=["haar", "dlib_hog"])
def detector(request, haar_detector, hog_detector):
    return {"haar": haar_detector, "dlib_hog": hog_detector}[request.param]


def test_finds_exactly_the_one_face(detector, astronaut, astronaut_face):
    boxes, scores = detector.detect(astronaut)
    assert boxes.shape == (1, 4) and boxes.dtype == np.float32
    assert scores.shape == (1,) and scores.dtype == np.float32 and scores[0] > 0
    # Both eyes and the mouth (found independently by the landmarker) lie in the box.
    _, landmarks = astronaut_face
    x0, y0, x1, y1 = boxes[0]
    inner = landmarks[36:68]
    assert (inner[:, 0] > x0).all() and (inner[:, 0] < x1).all()
    assert (inner[:, 1] > y0).all() and (inner[:, 1] < y1).all()


def test_haar_and_hog_agree_on_the_box(astronaut, haar_detector, hog_detector):
    haar_box = haar_detector.detect(astronaut)[0][0]
    hog_box = hog_detector.detect(astronaut)[0][0]
    assert iou(haar_box, hog_box) > 0.5


def test_grey_input_gives_the_same_face(detector, astronaut):
    import cv2
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgb_boxes, _ = detector.detect(astronaut)
    gray_boxes, _ = detector.detect(gray)
    assert len(gray_boxes) == 1 and iou(rgb_boxes[0], gray_boxes[0]) > 0.8


@pytest.mark.parametrize("name", ["haar", "dlib_hog"])
def test_two_faces_sorted_by_area(name, two_faces):
    boxes, scores = create_detector(name).detect(two_faces)
    assert len(boxes) == 2 and len(scores) == 2
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert areas[0] > areas[1]
    assert boxes[0, 0] < 400 <= boxes[1, 0]  # the large face is the 1.6x copy on the left
    assert 0.25 < areas[1] / areas[0] < 0.55  # 1 / 1.6**2 = 0.39


@pytest.mark.parametrize("name", ["haar", "dlib_hog"])
def test_min_face_size_drops_smaller_faces(name, two_faces):
    # The faces are about 145 and 90 px.
    boxes, _ = create_detector(name, min_face_size=120).detect(two_faces)
    assert len(boxes) == 1 and boxes[0, 0] < 400
    assert len(create_detector(name, min_face_size=200).detect(two_faces)[0]) == 0


def test_no_face_in_a_flat_image(detector):
    boxes, scores = detector.detect(np.full((200, 300, 3), 90, np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_unknown_detector_lists_the_valid_names():
    with pytest.raises(ValueError, match="'mtcnn'.*haar, dlib_hog, yunet"):
        create_detector("mtcnn")


@pytest.mark.parametrize("name", [name for name in DETECTORS if name not in ("auto", "none")])
def test_every_configured_detector_is_one_create_detector_builds(name, tmp_path):
    """What face.detector accepts, bar auto and none, create_detector knows: it builds the
    detector or asks for its missing weights, never answers 'not a detector'."""
    try:
        assert create_detector(name, model_path=str(tmp_path / "missing")).name == name
    except FileNotFoundError as err:
        assert "face.detector_model" in str(err)


def test_yunet_without_a_model_names_the_config_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="face.detector_model"):
        create_detector("yunet")
    with pytest.raises(FileNotFoundError, match="face.detector_model.*yunet.onnx"):
        create_detector("yunet", model_path=str(tmp_path / "yunet.onnx"))


def test_full_image_box():
    boxes, scores = full_image_box(np.zeros((48, 40), np.uint8))
    np.testing.assert_array_equal(boxes, [[0, 0, 40, 48]])
    np.testing.assert_array_equal(scores, [1.0])
    assert boxes.dtype == np.float32 and scores.dtype == np.float32


@pytest.mark.parametrize("name", ["haar", "dlib_hog"])
def test_detect_near_finds_the_face_a_whole_search_finds(name, astronaut):
    detector = create_detector(name)
    whole = detector.detect(astronaut)[0][0]
    moved = whole + np.array([12, -8, 12, -8], np.float32)  # where the tracker last saw it
    boxes, scores = detect_near(detector, astronaut, moved[None])
    assert boxes.shape == (1, 4) and scores.shape == (1,)
    assert iou(boxes[0], whole) > 0.7


def test_detect_near_searches_only_near_the_expected_boxes(two_faces, haar_detector):
    whole, _ = haar_detector.detect(two_faces)  # the large face on the left, the small one on the right
    near_small, _ = detect_near(haar_detector, two_faces, whole[1:2])
    assert len(near_small) == 1 and iou(near_small[0], whole[1]) > 0.7
    assert len(detect_near(haar_detector, two_faces, np.zeros((0, 4)))[0]) == 0
    both, _ = detect_near(haar_detector, two_faces, whole[::-1])
    assert len(both) == 2 and both[0, 0] < 400 <= both[1, 0]  # largest first, as `detect`


def test_detect_near_reports_one_face_once(astronaut, haar_detector):
    box = haar_detector.detect(astronaut)[0][0]
    twice = np.stack([box, box + 6])  # two followed boxes of one face: overlapping windows
    boxes, _ = detect_near(haar_detector, astronaut, twice)
    assert len(boxes) == 1


def test_detect_near_keeps_the_min_face_size(astronaut, haar_detector):
    box = haar_detector.detect(astronaut)[0][0]
    assert len(detect_near(haar_detector, astronaut, box[None], min_face_size=int(box[2] - box[0]) + 50)[0]) == 0


def test_a_followed_videos_whole_search_finds_what_the_full_search_finds(two_faces, haar_detector):
    """Haar's coarse candidates, each confirmed near it: the same faces, largest first, and
    nothing on a flat frame (the candidates' looser evidence does not pass unconfirmed)."""
    whole, _ = haar_detector.detect(two_faces)
    followed, scores = detect_followed(haar_detector, two_faces)
    assert len(followed) == len(whole) == 2 and len(scores) == 2
    assert all(iou(a, b) > 0.7 for a, b in zip(followed, whole))
    assert len(detect_followed(haar_detector, np.full((240, 320), 90, np.uint8))[0]) == 0
    assert len(detect_followed(haar_detector, two_faces, min_face_size=120)[0]) == 1


def test_a_followed_whole_search_shrinks_a_big_frame_as_the_full_search_does(two_faces, haar_detector):
    import cv2
    big = cv2.resize(two_faces, None, fx=2, fy=2)
    boxes, _ = detect_followed(haar_detector, big, detect_side=max(two_faces.shape[:2]))
    assert len(boxes) == 2 and all(iou(a, 2 * b) > 0.7 for a, b in zip(boxes, haar_detector.detect(two_faces)[0]))


def test_a_detector_without_a_coarse_search_searches_a_followed_frame_whole(astronaut, hog_detector):
    np.testing.assert_array_equal(detect_followed(hog_detector, astronaut)[0], hog_detector.detect(astronaut)[0])
