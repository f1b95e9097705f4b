"""`ray job submit` of jobs/train.py and jobs/tune.py to a real head node, data and runs on the S3 server."""
from __future__ import annotations

import json
import pathlib

import pytest

from fer_ray import storage

pytestmark = pytest.mark.job
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_submitted_training_job(ray_cluster, fer_shards, bucket):
    output = f"{bucket}/job-runs/dexpression"
    done = ray_cluster.submit(["python", "jobs/train.py", "--data", fer_shards, "--output", output,
                               "--epochs", "2", "--workers", "2", "--cpus-per-worker", "0.5"],
                              working_dir=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads(storage.read_bytes(f"{output}/metrics.json"))
    assert metrics["epochs"] == 2 and metrics["split"] == "test" and metrics["n"] > 0
    assert storage.exists(f"{output}/checkpoint.pt") and storage.exists(f"{output}/learning_curve.png")
    assert "testing-secret" not in done.stdout + done.stderr


def test_submitted_training_job_with_bad_config_fails_fast(ray_cluster, fer_shards, bucket):
    done = ray_cluster.submit(["python", "jobs/train.py", "--data", fer_shards, "--output", f"{bucket}/x",
                               "--lr", "-1"], working_dir=str(ROOT))
    assert done.returncode != 0
    assert "lr: -1.0 must be > 0" in done.stdout + done.stderr
