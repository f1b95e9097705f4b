"""Shared fixtures for the vision unit tests: a real face and loaded models.

Models are session-scoped: loading dlib's 68-point predictor takes about a second.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's 512x512 RGB astronaut: one real, frontal face."""
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="session")
def landmarker():
    from fer_ray.vision.landmarks import DlibLandmarker
    return DlibLandmarker()


@pytest.fixture(scope="session")
def hog_detector():
    from fer_ray.vision.detect import create_detector
    return create_detector("dlib_hog")


@pytest.fixture(scope="session")
def haar_detector():
    from fer_ray.vision.detect import create_detector
    return create_detector("haar")


@pytest.fixture(scope="session")
def astronaut_face(astronaut, hog_detector, landmarker):
    """(box, landmarks) of the astronaut's face, as the pipeline finds them."""
    boxes, _ = hog_detector.detect(astronaut)
    assert len(boxes) == 1
    return boxes[0], landmarker(astronaut, boxes)[0]


@pytest.fixture(scope="session")
def two_faces(astronaut) -> np.ndarray:
    """The astronaut's head (250x250 around the ~90 px face) at 1.6x and at 1x side by
    side: two faces of about 145 and 90 px, both above dlib HOG's 80 px floor."""
    head = astronaut[0:250, 100:350]
    big = cv2.resize(head, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((400, 400 + 250, 3), 128, np.uint8)
    canvas[:, :400] = big
    canvas[:250, 400:] = head
    return canvas


@pytest.fixture(scope="session")
def rotate():
    """rotate(image, degrees): turned counter-clockwise (as displayed) about its centre."""
    def rotate_image(image: np.ndarray, degrees: float) -> np.ndarray:
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
        return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    return rotate_image
