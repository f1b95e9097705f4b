"""face-alignment's detectors (sfd, blazeface), batched, against face-alignment's own calls
on the same weights (networks built here, seeded, saved to weight files)."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from fer_ray.vision.boxes import keep_faces
from fer_ray.vision.detect import create_detector, detect_many
from fer_ray.vision.torch_detect import blazeface_anchors


@pytest.fixture(scope="module")
def images():
    """Two photos of one size and one of another (S3FD batches by size)."""
    astronaut = cv2.resize(data.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    return [astronaut, astronaut[:, ::-1].copy(), cv2.resize(data.astronaut(), (120, 96))]


@pytest.fixture(scope="module")
def sfd_file(tmp_path_factory):
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sfd") / "s3fd.pth"
    torch.save(s3fd().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def blazeface_files(tmp_path_factory):
    from face_alignment.detection.blazeface.net_blazeface import BlazeFace

    torch.manual_seed(0)
    net = BlazeFace()
    with torch.no_grad():  # box sizes a trained net would give (~0.3 of the input, varying a
        for head in (net.regressor_8, net.regressor_16):  # little with it): random ones are
            head.weight.mul_(0.01)  # degenerate, and face-alignment's weighted NMS never
            head.bias.zero_()  # finishes on zero-area boxes
            head.bias.view(-1, 16)[:, 2:4] = 40.0
    root = tmp_path_factory.mktemp("blazeface")
    torch.save(net.state_dict(), root / "blazeface.pth")
    np.save(root / "anchors.npy", blazeface_anchors())
    return root / "blazeface.pth", root / "anchors.npy"


def theirs(boxes_scores, min_face_size: int):
    """face-alignment's (x0,y0,x1,y1,score) rows under our size filter and order."""
    rows = np.asarray(boxes_scores, np.float32).reshape(-1, 5)
    return keep_faces(rows[:, :4], rows[:, 4], min_face_size)


def assert_same_detections(got, expected):
    """Same boxes and scores (boxes of equal area may come in either order)."""
    def rows(boxes, scores):
        table = np.column_stack([boxes, scores]).round(2)
        return table[np.lexsort(table.T[::-1])]

    assert len(got[0]) == len(expected[0])
    np.testing.assert_allclose(rows(*got), rows(*expected), atol=0.011)
    areas = (got[0][:, 2] - got[0][:, 0]) * (got[0][:, 3] - got[0][:, 1])
    assert (np.diff(areas) <= 1e-3).all()  # largest first


def test_sfd_batched_equals_face_alignments_detector(sfd_file, images):
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    reference = SFDDetector("cpu", path_to_detector=str(sfd_file))
    ours = create_detector("sfd", str(sfd_file), min_face_size=10)
    found = detect_many(ours, images)
    assert sum(len(boxes) for boxes, _ in found) > 0  # the comparison has boxes to compare
    for image, got in zip(images, found):
        assert_same_detections(got, theirs(reference.detect_from_image(image.copy()), 10))


def test_blazeface_batched_equals_face_alignments_detector(blazeface_files, images):
    from face_alignment.detection.blazeface.blazeface_detector import BlazeFaceDetector

    weights, anchors = blazeface_files
    reference = BlazeFaceDetector("cpu", path_to_detector=str(weights), path_to_anchor=str(anchors))
    ours = create_detector("blazeface", str(weights), min_face_size=1)
    found = ours.detect_many(images)  # one forward pass for images of two sizes
    assert sum(len(boxes) for boxes, _ in found) > 0
    for image, got in zip(images, found):
        assert_same_detections(got, theirs(reference.detect_from_image(image.copy()), 1))


def test_blazeface_anchors_are_the_front_models_grid():
    anchors = blazeface_anchors()
    assert anchors.shape == (896, 4) and (anchors[:, 2:] == 1).all()
    first, second = anchors[:512], anchors[512:]  # 16x16 cells x 2, then 8x8 cells x 6
    assert np.allclose(np.unique(first[:, 0]), (np.arange(16) + 0.5) / 16)
    assert np.allclose(np.unique(second[:, 1]), (np.arange(8) + 0.5) / 8)
    assert (first[0] == first[1]).all() and np.allclose(first[2, :2], [1.5 / 16, 0.5 / 16])


def test_grey_images_are_detected_as_rgb(sfd_file, images):
    ours = create_detector("sfd", str(sfd_file), min_face_size=10)
    grey = cv2.cvtColor(images[0], cv2.COLOR_RGB2GRAY)
    assert_same_detections(ours.detect(grey), ours.detect(np.repeat(grey[:, :, None], 3, axis=2)))


def test_missing_detector_weights_name_the_field_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    with pytest.raises(FileNotFoundError, match="face.detector_model.*s3fd-619a316812.pth"):
        create_detector("sfd")
    with pytest.raises(FileNotFoundError, match="face.detector_model.*blazeface.pth"):
        create_detector("blazeface")


def test_network_detectors_and_fan_do_not_import_the_classic_detectors():
    """detect imports torch_detect (for sfd, blazeface); the reverse would be a circle."""
    check = ("import sys, fer_ray.vision.torch_detect, fer_ray.vision.fan; "
             "assert 'fer_ray.vision.detect' not in sys.modules")
    subprocess.run([sys.executable, "-c", check], check=True)
