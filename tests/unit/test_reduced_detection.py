"""Big photos are searched for faces at a reduced size; landmarks and crops still come from
the full image (no Ray)."""
import numpy as np
import pytest

from fer_ray.config import FaceConfig
from fer_ray.vision.detect import reduction
from fer_ray.vision.faces import FaceExtractor
from fer_ray.vision.synthetic_face import draw_photo
from fer_ray.vision.tracking import iou


def matched(faces, reference):
    """Each face paired with the reference face it overlaps most (faces of the same size may
    come in either order)."""
    return [(face, max(reference, key=lambda ref: iou(face.bbox, ref.bbox))) for face in faces]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_reduced_search_finds_the_full_size_faces_with_the_same_landmarks(seed):
    """On the default 48 px crops; on 224 px crops bench/big_photos.py prints the figures
    (dlib's points move with the box it is given, and the two boxes differ by a few pixels)."""
    photo, _ = draw_photo(2400, 1800, 540, seed=seed)
    full = FaceExtractor(FaceConfig(detect_side=0), "haar").extract(photo)
    reduced = FaceExtractor(FaceConfig(detect_side=800), "haar").extract(photo)
    assert len(full) == len(reduced) == 2
    for face, ref in matched(reduced, full):
        assert iou(face.bbox, ref.bbox) >= 0.9
        assert face.face.shape == ref.face.shape == (48, 48)  # cut from the full image
        assert np.linalg.norm(face.landmarks - ref.landmarks, axis=1).mean() <= 1.5


def test_only_images_over_the_side_are_reduced():
    assert reduction(np.zeros((480, 640)), 1024) == 1.0
    assert reduction(np.zeros((3000, 4000, 3)), 1000) == 0.25
    assert reduction(np.zeros((3000, 4000, 3)), 0) == 1.0
