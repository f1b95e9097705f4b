"""face-alignment's networks in the preprocessing job: S3FD boxes and batched FAN landmarks
on Ray, weights read from the S3 test server (staged once per node), answers equal to the
library's called directly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fer_ray import storage
from fer_ray.config import ConfigError, PreprocessConfig
from fer_ray.pipelines import preprocess
from fer_ray.vision.faces import FaceExtractor
from fer_ray.weights import NETWORK_WEIGHTS
from tests.fan_net import save_test_fan
from tests.integration.helpers import read_output, run_preprocess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def weights_on_s3(bucket, tmp_path_factory):
    """The test FAN and a seeded S3FD, uploaded as a user would keep them: in a bucket."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    root = tmp_path_factory.mktemp("networks")
    save_test_fan(root / "fan.pth")
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), root / "s3fd.pth")
    uris = {}
    for name, filename in (("fan", "fan.pth"), ("sfd", "s3fd.pth")):
        uris[name] = f"{bucket}/models/{NETWORK_WEIGHTS[name][0]}"
        storage.write_bytes(uris[name], (root / filename).read_bytes())
    return uris


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two photos of different sizes with real faces (skimage's astronaut)."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    (root / "neutral").mkdir()
    astronaut = data.astronaut()
    Image.fromarray(astronaut[:320, 80:400]).save(root / "neutral" / "a.png")
    Image.fromarray(astronaut[:256, 120:376]).save(root / "neutral" / "b.png")
    return root


def network_options(uris: dict) -> dict:
    return dict(detector="sfd", detector_model=uris["sfd"], landmarker="fan", landmark_model=uris["fan"],
                largest_only=True, size=64, color="rgb")


def test_sfd_and_fan_on_ray_equal_the_library(photos, weights_on_s3, ray_cluster, tmp_path):
    out = str(tmp_path / "out")
    summary = run_preprocess("folder", str(photos), out, workers=1, **network_options(weights_on_s3))
    manifest = read_output(out, "manifest").to_pylist()
    assert summary["inputs"] == len(manifest) == 2 and {r["status"] for r in manifest} <= {"ok", "no_face"}
    faces = sorted(read_output(out, "faces").to_pylist(), key=lambda r: r["source_uri"])
    assert faces and {(r["detector"], r["landmarker"]) for r in faces} == {("sfd", "fan")}

    cfg = PreprocessConfig(layout="folder", input=str(photos), output=out)
    for key, value in network_options(weights_on_s3).items():
        setattr(cfg.face, key, value)
    extractor = FaceExtractor(cfg.face, "sfd")  # the same weights, staged here from S3
    for row in faces:
        image = np.asarray(Image.open(row["source_uri"]).convert("RGB"))
        expected = extractor.extract(image)[0]
        np.testing.assert_allclose(row["bbox"], expected.bbox, atol=1e-3)
        assert np.abs(np.asarray(row["landmarks"]).reshape(68, 2) - expected.landmarks).max() <= 0.5


def test_missing_network_weights_fail_before_any_ray_work(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # face-alignment's cache: empty
    cfg = PreprocessConfig(layout="folder", input=str(photos), output=str(tmp_path / "out"))
    cfg.face.landmarker = "fan"
    with pytest.raises(ConfigError, match="face.landmark_model: not set and 2DFAN4-11f355bf06.pth.tar"):
        preprocess.check(cfg)
    cfg.face.landmarker, cfg.face.detector = "dlib", "blazeface"
    with pytest.raises(ConfigError, match="face.detector_model: not set and blazeface.pth"):
        preprocess.check(cfg)
    cfg.face.detector_model = "s3://nowhere-bucket/blazeface.pth"
    with pytest.raises(ConfigError, match="face.detector_model"):
        preprocess.check(cfg)
    assert not (tmp_path / "out").exists()
