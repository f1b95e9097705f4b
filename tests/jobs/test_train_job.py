"""`ray job submit` of jobs/train.py to a real head node, data and run on the S3 server, and
the job's check of its config, run as a driver with no cluster to reach.

The submitted run is the session fixture `training_job` (tests/conftest.py), which the
training tests also examine (tests/integration/test_training.py, test_train_faults.py)."""
from __future__ import annotations

import pathlib

import pytest

from fer_ray import storage
from tests.cluster import run_job_with_no_cluster
from tests.conftest import TRAIN_JOB

pytestmark = pytest.mark.job
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_submitted_training_job(training_job):
    output, done, metrics = training_job.output, training_job.done, training_job.report
    epochs = TRAIN_JOB["epochs"]
    assert metrics["epochs"] == epochs and metrics["split"] == "test" and metrics["n"] > 0
    assert storage.exists(f"{output}/checkpoint.pt") and storage.exists(f"{output}/learning_curve.png")
    assert f"accuracy={metrics['accuracy']:.3f}" in done.stdout  # the job printed its report
    assert f"train: {epochs}/{epochs} epochs (100%)" in done.stdout  # and its progress
    assert "testing-secret" not in done.stdout + done.stderr


def test_training_job_with_bad_config_fails_before_any_cluster_work(fer_shards, bucket):
    done = run_job_with_no_cluster(["jobs/train.py", "--data", fer_shards, "--output", f"{bucket}/x",
                                    "--lr", "-1"], cwd=str(ROOT))
    assert done.returncode != 0
    assert "lr: -1.0 must be > 0" in done.stdout + done.stderr
