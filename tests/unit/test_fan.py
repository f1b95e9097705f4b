"""Batched FAN landmarks against face-alignment's own API, on the same weights and boxes.

The network is face-alignment's FAN built by tests/fan_net.py (seeded, shaped so its
heatmap peaks are distinct) and saved to a weights file that both sides load through
their real loading paths (ours: face.landmark_model or face-alignment's cache; theirs:
its cache).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fer_ray.config import PRECISIONS
from fer_ray.vision import fan
from fer_ray.vision.fan import FanLandmarker
from fer_ray.weights import NETWORK_WEIGHTS, network_weights
from tests.fan_net import astronaut_faces, lfw_faces, peak_distinctness, save_test_fan

FAN_FILE = NETWORK_WEIGHTS["fan"][0]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    """face-alignment's cache (torch hub's folder) in a temporary place, with our FAN in it."""
    previous = torch.hub.get_dir()
    root = tmp_path_factory.mktemp("hub")
    torch.hub.set_dir(str(root))
    (root / "checkpoints").mkdir()
    save_test_fan(root / "checkpoints" / FAN_FILE)
    yield root
    torch.hub.set_dir(previous)


@pytest.fixture(scope="module")
def reference(hub_dir):
    import face_alignment

    return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu", flip_input=False,
                                        face_detector="folder", compile=False)


@pytest.fixture(scope="module")
def ours(hub_dir):
    return FanLandmarker("fan")  # from face-alignment's cache, as nothing is configured


def reference_points(reference, faces) -> list[np.ndarray]:
    return [np.stack(reference.get_landmarks_from_image(image, detected_faces=list(boxes)))
            for image, boxes in faces]


def test_landmarks_equal_face_alignment_within_half_a_pixel(reference, ours):
    faces = astronaut_faces() + lfw_faces()
    maps, centers, scales = ours.heatmaps(*zip(*faces))  # all six faces in one forward pass
    points, _ = fan.decode(maps, centers, scales)
    expected = np.concatenate(reference_points(reference, faces))
    assert points.shape == expected.shape == (6, 68, 2)
    assert np.abs(points - expected).max() <= 0.5
    # a comparison that means something: points spread over the window, most peaks inside
    # the map (the quarter-pixel step applies), and peaks far more distinct than float noise
    assert np.ptp(points[0], axis=0).min() > 20
    peaks = maps.flatten(2).argmax(-1)
    inside = ((peaks % 64 > 0) & (peaks % 64 < 63) & (peaks // 64 > 0) & (peaks // 64 < 63)).float().mean()
    assert inside > 0.8 and peak_distinctness(maps).min() > 1e-4


def test_heatmaps_match_the_reference_network_on_its_own_crops(reference, ours):
    from face_alignment.utils import crop

    image, boxes = astronaut_faces()[0]
    maps, centers, scales = ours.heatmaps([image], [boxes])
    for i in range(len(boxes)):
        window = crop(image, centers[i], scales[i]).transpose(2, 0, 1).astype(np.float32) / 255.0
        with torch.no_grad():
            expected = reference.face_alignment_net(torch.from_numpy(window)[None])[-1][0]
        spread = float(expected.max() - expected.min())
        assert float((maps[i] - expected).abs().max()) < 1e-4 * spread


def test_flip_input_matches_face_alignment(hub_dir):
    import face_alignment

    flipping = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu", flip_input=True,
                                            face_detector="folder", compile=False)
    faces = astronaut_faces()[:1]
    got = FanLandmarker("fan", flip_input=True).predict_many([faces[0][0]], [faces[0][1]])[0]
    assert np.abs(got - reference_points(flipping, faces)[0]).max() <= 0.5


def test_one_batch_gives_what_separate_calls_give(ours):
    faces = lfw_faces(3)
    together = ours.predict_many([image for image, _ in faces], [boxes for _, boxes in faces])
    for (image, boxes), points in zip(faces, together):
        assert np.abs(ours(image, boxes) - points).max() <= 0.5
    assert [p.shape for p in ours.predict_many([faces[0][0]], [np.zeros((0, 4))])] == [(0, 68, 2)]


def test_decode_equals_face_alignments_heatmap_decoding():
    from face_alignment.utils import get_preds_fromhm

    rng = np.random.default_rng(1)
    maps = rng.random((3, 68, 64, 64)).astype(np.float32)
    maps[0, :, 0, 5] = 9  # peaks on the border: no quarter-pixel step there
    centers, scales = np.array([[100.5, 80.2], [40.0, 41.0], [300.0, 20.0]]), np.array([1.1, 0.3, 2.4])
    points, scores = fan.decode(torch.from_numpy(maps), centers, scales)
    for i in range(3):
        _, expected, expected_scores = get_preds_fromhm(maps[i:i + 1], centers[i], scales[i])
        np.testing.assert_array_equal(points[i], expected[0])
        np.testing.assert_allclose(scores[i], expected_scores[0])


@pytest.mark.parametrize("size", [(25, 25), (130, 97), (511, 511), (600, 410)])
def test_window_resize_is_opencvs_bilinear_to_the_bit(size):
    rng = np.random.default_rng(2)
    window = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    other = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)  # a smaller window in the same batch
    got = fan.resize_windows(*fan.stack_windows([window, other], "cpu"))
    for image, resized in zip((window, other), got):
        expected = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal((resized.numpy() * 255).round().astype(np.uint8), expected.transpose(2, 0, 1))


def test_weights_from_a_uri_are_staged_once(hub_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RAY_CACHE", str(tmp_path / "cache"))
    uri = f"file://{hub_dir / 'checkpoints' / FAN_FILE}"
    staged = network_weights("fan", uri)
    assert staged.startswith(str(tmp_path / "cache")) and staged.endswith(FAN_FILE)
    assert network_weights("fan", uri) == staged


def test_missing_weights_name_the_file_and_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    with pytest.raises(FileNotFoundError, match=r"face.landmark_model.*3DFAN4-7835d9f11d.pth.tar.*s3://"):
        FanLandmarker("fan3d")
    with pytest.raises(FileNotFoundError, match="face.landmark_model.*does not exist"):
        FanLandmarker("fan", str(tmp_path / "nowhere.pth.tar"))


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "not-fan.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a 2DFAN4"):
        fan.load_fan(str(path))


def test_fan3d_gives_the_x_y_of_face_alignments_3d_landmarks(hub_dir):
    """fan3d: the 3D network's file (here the test FAN's weights under 3DFAN4's name) and
    face-alignment's LandmarksType.THREE_D answer, whose z we do not keep."""
    import shutil

    import face_alignment
    from face_alignment.models import ResNetDepth

    checkpoints = hub_dir / "checkpoints"
    shutil.copy(checkpoints / FAN_FILE, checkpoints / NETWORK_WEIGHTS["fan3d"][0])
    torch.save({"state_dict": ResNetDepth().state_dict()}, checkpoints / "depth-2a464da4ea.pth.tar")
    reference = face_alignment.FaceAlignment(face_alignment.LandmarksType.THREE_D, device="cpu",
                                             flip_input=False, face_detector="folder", compile=False)
    faces = lfw_faces(2)
    expected = reference_points(reference, faces)
    got = FanLandmarker("fan3d").predict_many([image for image, _ in faces], [boxes for _, boxes in faces])
    for points, reference_xyz in zip(got, expected):
        assert reference_xyz.shape == (1, 68, 3)
        assert np.abs(points - reference_xyz[..., :2]).max() <= 0.5


def test_reduced_precision_runs_the_network_in_that_dtype(hub_dir, ours):
    """bf16 (meant for GPUs; checked here on the CPU): weights in bf16, heatmaps back in
    float32, landmarks near the fp32 ones (bf16 keeps 8 bits of mantissa)."""
    image, boxes = lfw_faces(1)[0]
    half = FanLandmarker("fan", precision="bf16")
    assert next(half.net.parameters()).dtype == torch.bfloat16
    maps, _, _ = half.heatmaps([image], [boxes])
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert np.median(np.abs(half(image, boxes) - ours(image, boxes))) <= 2.0


def test_every_configured_precision_has_its_torch_dtype():
    assert tuple(fan.DTYPES) == PRECISIONS
    assert fan.DTYPES == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
