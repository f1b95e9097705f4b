"""FaceExtractor: the per-image function shared by the Ray stage and the benchmark."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from fer_ray.config import FaceConfig
from fer_ray.vision.align import eye_angle_degrees
from fer_ray.vision.faces import Face, FaceExtractor


@pytest.fixture(scope="module")
def haar_extractor():
    return FaceExtractor(FaceConfig(), "haar")


def test_one_face_in_the_astronaut(astronaut, haar_extractor):
    faces = haar_extractor.extract(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face)
    assert face.face.shape == (48, 48) and face.face.dtype == np.uint8
    assert face.bbox.shape == (4,) and face.bbox.dtype == np.float32
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    assert isinstance(face.det_score, float) and face.det_score > 0
    assert abs(eye_angle_degrees(face.landmarks)) < 1.0
    assert (face.landmarks[36:68] >= 0).all() and (face.landmarks[36:68] <= 47).all()


def test_rgb_output_and_dlib_detector(astronaut):
    faces = FaceExtractor(FaceConfig(color="rgb", size=64), "dlib_hog").extract(astronaut)
    assert len(faces) == 1 and faces[0].face.shape == (64, 64, 3)


def test_faces_largest_first_and_largest_only(two_faces):
    faces = FaceExtractor(FaceConfig(), "haar").extract(two_faces)
    assert len(faces) == 2
    areas = [(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) for f in faces]
    assert areas[0] > areas[1]
    only = FaceExtractor(FaceConfig(largest_only=True), "haar").extract(two_faces)
    assert len(only) == 1
    np.testing.assert_array_equal(only[0].bbox, faces[0].bbox)


def test_no_face_is_an_empty_list(haar_extractor):
    assert haar_extractor.extract(np.full((240, 320, 3), 100, np.uint8)) == []


def test_detector_none_uses_the_whole_crop(astronaut, astronaut_face):
    box, _ = astronaut_face
    x0, y0, side = int(box[0]) - 20, int(box[1]) - 15, int(box[2] - box[0]) + 40
    crop = cv2.cvtColor(astronaut[y0:y0 + side, x0:x0 + side], cv2.COLOR_RGB2GRAY)
    small = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    faces = FaceExtractor(FaceConfig(), "none").extract(small)
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].bbox, [0, 0, 48, 48])
    assert faces[0].det_score == 1.0 and faces[0].face.shape == (48, 48)
    assert abs(eye_angle_degrees(faces[0].landmarks)) < 1.0


def test_pickles_as_its_config(astronaut, haar_extractor):
    """What a worker receives is rebuilt from the config: no native objects travel."""
    data = pickle.dumps(haar_extractor)
    assert len(data) < 2000
    copy = pickle.loads(data)
    assert copy.detector_name == "haar" and copy.cfg == haar_extractor.cfg
    np.testing.assert_array_equal(copy.extract(astronaut)[0].face,
                                  haar_extractor.extract(astronaut)[0].face)


def test_unknown_detector_fails_at_construction():
    with pytest.raises(ValueError, match="haar, dlib_hog, yunet"):
        FaceExtractor(FaceConfig(), "auto")
