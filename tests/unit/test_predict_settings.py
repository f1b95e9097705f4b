"""Predict's settings without Ray: the checkpoint's face settings with this machine's
overrides, and a run identity that only what shapes the result changes."""
from __future__ import annotations

import dataclasses

import pytest

from fer_ray.config import ConfigError, PredictConfig, RetryConfig
from fer_ray.pipelines import predict, runs

TRAINED_FACE = {"detector": "sfd", "detector_model": "/train/s3fd.pth", "landmarker": "dlib",
                "landmark_model": "/train/shape_predictor_68.dat", "precision": "bf16", "size": 48}
STATE = {"face": TRAINED_FACE, "model_name": "dexpression_fer", "spec": {"input_size": 48, "channels": 1}}


def predict_config(**fields) -> PredictConfig:
    return PredictConfig(**{"checkpoint": "run", "input": "in", "output": "out", **fields})


def test_face_settings_are_the_checkpoints_unless_overridden():
    face = predict.face_config(STATE, predict_config(num_gpus=1.0))
    assert {name: getattr(face, name) for name in TRAINED_FACE} == TRAINED_FACE
    here = predict.face_config(STATE, predict_config(detector="haar", landmark_model="/here/predictor.dat"))
    assert (here.detector, here.detector_model) == ("haar", "/train/s3fd.pth")
    assert (here.landmarker, here.landmark_model) == ("dlib", "/here/predictor.dat")


def test_fan_precision_is_the_checkpoints_on_gpus_and_fp32_on_cpus():
    assert predict.face_config(STATE, predict_config()).precision == "fp32"
    assert predict.face_config(STATE, predict_config(num_gpus=0.5)).precision == "bf16"
    assert predict.face_config(STATE, predict_config(num_gpus=0.5, precision="fp16")).precision == "fp16"


def test_checkpoint_faces_must_fit_the_model():
    state = {**STATE, "face": {**TRAINED_FACE, "size": 64}}
    with pytest.raises(ConfigError, match="checkpoint: its faces are 64px gray, but dexpression_fer expects 48px"):
        predict.preprocess_config(state, predict_config())


def test_every_field_either_shapes_the_result_or_is_an_execution_field():
    shaping = {"checkpoint", "input", "format", *predict.FACE_OVERRIDES, "precision"}
    fields = {f.name for f in dataclasses.fields(PredictConfig)}
    assert fields - set(runs.EXECUTION_FIELDS) == shaping


def test_execution_fields_leave_the_run_identity_unchanged(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    state = {**STATE, "face": {**TRAINED_FACE, "precision": "fp32"}}

    def identity(**fields):
        return predict.run_settings(str(checkpoint), predict.preprocess_config(state, predict_config(**fields)))

    base = identity()
    assert base["checkpoint"] == str(checkpoint) and base["face"]["detector"] == "sfd"
    assert identity(workers=3, batch_size=64, num_gpus=0.5, rows_per_file=10, restart=True,
                    retry=RetryConfig(storage_attempts=2)) == base
    assert identity(landmark_model="/here/predictor.dat")["face"] != base["face"]
    # the precision is part of the face settings: a bf16 checkpoint's FAN on a CPU runs fp32, another result
