"""`ray job submit` of jobs/synthesize.py to a real head node, faces and output on the S3 server,
and the job's check of its options, run as a driver with no cluster to reach."""
from __future__ import annotations

import json
import pathlib

import pytest

from fer_ray import storage
from tests.cluster import run_job_with_no_cluster
from tests.integration.helpers import expected_pairs, read_output, run_file

pytestmark = pytest.mark.job
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_submitted_synthesis_job_reruns_into_the_same_output_identically(ray_cluster, jaffe_faces, synthesized):
    """The job rewrites the output a run in another driver made: same rows, no duplicates."""
    output, _ = synthesized
    before = {r["sample_id"]: r["face"] for r in read_output(output, "mixed").to_pylist()}
    done = ray_cluster.submit(["python", "jobs/synthesize.py", "--input", jaffe_faces, "--output", output,
                               "--method", "region", "--contact-sheets", "1"], working_dir=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = {r["sample_id"]: r["face"] for r in read_output(output, "mixed").to_pylist()}
    assert after == before and len(before) == expected_pairs(read_output(jaffe_faces, "faces").to_pylist())
    assert len(read_output(output, "manifest")) == len(read_output(jaffe_faces, "faces"))
    summary = json.loads(storage.read_bytes(run_file(output, "_summary.json")))
    assert f"{summary['mixed']} mixed faces" in done.stdout and len(summary["contact_sheets"]) == 1
    assert summary["run_state"] == "new" and "contact_sheets: 4 -> 1" in done.stdout + done.stderr
    assert len(storage.list_files(run_file(output, "contact_sheets"))) == 1
    assert storage.list_dirs(f"{output}/runs") == [summary["run"]]  # the earlier run went after the commit
    assert "testing-secret" not in done.stdout + done.stderr


def test_synthesis_job_with_inconsistent_options_fails_before_any_cluster_work(jaffe_faces, bucket):
    done = run_job_with_no_cluster(["jobs/synthesize.py", "--input", jaffe_faces, "--output",
                                    f"{bucket}/job-synth/x", "--method", "weighted"], cwd=str(ROOT))
    assert done.returncode != 0
    assert "alpha: method 'weighted' needs alpha in [0, 1]" in done.stdout + done.stderr
