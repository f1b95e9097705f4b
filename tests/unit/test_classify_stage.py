"""The classify stage without Ray: a checkpoint applied to a batch of faces, in an actor
that never imports Ray Train."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from fer_ray import config
from fer_ray.config import TrainConfig
from fer_ray.labels import BASIC7
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model
from fer_ray.stages.classify import ClassifySettings, ClassifyStage, classifier_arrays

ROOT = pathlib.Path(__file__).resolve().parents[2]
MEAN, STD = 100.0, 40.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised vgg_landmarks checkpoint (48x48 grey faces plus landmarks)."""
    torch.manual_seed(0)
    model = create_model("vgg_landmarks", num_classes=len(BASIC7)).eval()
    norm = {"mean": np.full((1, 48, 48), MEAN, np.float32), "std": np.full((1, 48, 48), STD, np.float32)}
    cfg_dict = config.to_dict(TrainConfig(model="vgg_landmarks"))
    state = ckpt.make_checkpoint(model=model, optimizer=None, cfg_dict=cfg_dict, class_names=BASIC7, norm=norm,
                                 epoch=0, history=[])
    return ckpt.save(state, str(tmp_path_factory.mktemp("run"))), model


def faces(n: int = 5) -> dict:
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 1, 48, 48), dtype=np.uint8),
            "landmarks": rng.uniform(0, 48, (n, 68, 2)).astype(np.float32),
            "source_uri": np.array([f"img{i}.png" for i in range(n)], dtype=object)}


def test_probabilities_are_the_checkpoint_models_on_standardised_faces(checkpoint):
    path, model = checkpoint
    batch = faces()
    out = ClassifyStage(ClassifySettings(path))(batch)
    with torch.no_grad():
        logits = model((torch.from_numpy(batch["image"]).float() - MEAN) / STD, torch.from_numpy(batch["landmarks"]))
    assert np.allclose(out["probabilities"], torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert out["prediction"].tolist() == out["probabilities"].argmax(1).tolist()
    assert set(out) == {"source_uri", "probabilities", "prediction"}  # pixels and landmarks dropped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_probabilities_are_the_cpus(checkpoint):
    batch = faces(64)
    on_cpu = ClassifyStage(ClassifySettings(checkpoint[0]))(batch)
    on_gpu = ClassifyStage(ClassifySettings(checkpoint[0], "cuda"))(batch)
    assert isinstance(on_gpu["probabilities"], np.ndarray)
    assert np.abs(on_gpu["probabilities"] - on_cpu["probabilities"]).max() < 1e-4


CLASSIFY_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
from fer_ray.stages.classify import ClassifySettings, ClassifyStage, classifier_arrays
batch = {"image": np.zeros((2, 1, 48, 48), np.uint8), "landmarks": np.zeros((2, 68, 2), np.float32)}
ClassifyStage(ClassifySettings(sys.argv[1]))(batch)
print(json.dumps(sorted(name for name in sys.modules if name == "ray.train" or name.startswith("ray.train."))))
"""


def test_a_classify_actor_never_imports_ray_train(checkpoint):
    """What a classify actor runs (import, load, one batch) leaves Ray Train unimported: an
    inference worker needs no training library."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CLASSIFY_IN_A_FRESH_PROCESS, checkpoint[0]],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("channels", [1, 3])
def test_classifier_arrays_lay_out_faces_and_blank_the_rows_without_one(channels):
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (4, 5, channels), dtype=np.uint8) for _ in range(2)]
    points = [rng.normal(size=136).astype(np.float32) for _ in range(3)]
    arrays = classifier_arrays([faces[0].tobytes(), b"", faces[1].tobytes()], [(4, 5, channels), (0, 0, 0),
                               (4, 5, channels)], [True, False, True], points, (4, 5, channels))
    image = arrays["image"]
    assert image.shape == (3, channels, 4, 5) and image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(image[0], faces[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(image[2], faces[1].transpose(2, 0, 1))
    assert not image[1].any()
    np.testing.assert_array_equal(arrays["landmarks"][1], points[1].reshape(68, 2))
