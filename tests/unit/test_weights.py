"""Weight files: local paths as they are, URIs staged once into the node cache."""
from __future__ import annotations

import os

import pytest

from fer_ray.weights import DLIB_68_MODEL, dlib_predictor_path, local_weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RAY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def weight_file(tmp_path):
    path = tmp_path / "store" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"weights-v1" * 1000)
    return path


def test_dlib_predictor_ships_with_face_recognition_models():
    path = dlib_predictor_path()
    assert os.path.basename(path) == DLIB_68_MODEL
    assert os.path.getsize(path) > 50_000_000  # the real 68-point model, ~95 MB


def test_local_path_is_returned_as_is(weight_file, cache):
    assert local_weights(str(weight_file)) == str(weight_file)
    assert not cache.exists()  # nothing copied


def test_missing_local_path_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="face.detector_model.*nope.onnx"):
        local_weights(str(tmp_path / "nope.onnx"), what="face.detector_model")


def test_uri_is_staged_once_and_again_when_replaced(weight_file, cache):
    uri = f"file://{weight_file}"
    staged = local_weights(uri)
    assert staged.startswith(str(cache)) and os.path.basename(staged) == "model.onnx"
    assert open(staged, "rb").read() == weight_file.read_bytes()
    assert os.listdir(os.path.dirname(staged)) == ["model.onnx"]  # no temp file left behind

    os.utime(staged, (1_000_000, 1_000_000))  # an old mtime: a rewrite would change it
    assert local_weights(uri) == staged and os.path.getmtime(staged) == 1_000_000

    weight_file.write_bytes(b"weights-v2, longer")  # the object is replaced: a new copy
    fresh = local_weights(uri)
    assert fresh != staged and open(fresh, "rb").read() == b"weights-v2, longer"
    assert open(staged, "rb").read().startswith(b"weights-v1")


def test_different_uris_with_the_same_name_do_not_collide(tmp_path, cache):
    uris = []
    for folder in ("a", "b"):
        path = tmp_path / folder / "model.dat"
        path.parent.mkdir()
        path.write_bytes(folder.encode())
        uris.append(f"file://{path}")
    first, second = (local_weights(uri) for uri in uris)
    assert first != second
    assert open(first, "rb").read() == b"a" and open(second, "rb").read() == b"b"


def test_missing_uri_names_the_field(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="face.landmark_model"):
        local_weights(f"file://{tmp_path}/missing.dat", what="face.landmark_model")
    assert not (cache / "weights").exists()
