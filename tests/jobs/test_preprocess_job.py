"""`ray job submit` of jobs/preprocess.py to a real head node, reading and writing the S3 server.

The submitted job itself is the session fixture `preprocess_job` (tests/conftest.py): its
output is also the synthesis tests' input, so one job serves both."""
from __future__ import annotations

import json
import pathlib
import re

import pytest

from fer_ray import storage
from tests.integration.helpers import read_output, run_file

pytestmark = pytest.mark.job
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_submitted_preprocess_job(preprocess_job):
    done, output = preprocess_job.done, preprocess_job.output
    assert "succeeded" in done.stdout + done.stderr
    raw = preprocess_job.args[preprocess_job.args.index("--input") + 1]
    summary = json.loads(storage.read_bytes(run_file(output, "_summary.json")))
    n_inputs = len(storage.list_files(raw))
    assert read_output(output, "manifest").num_rows == n_inputs == summary["inputs"]
    assert read_output(output, "faces").num_rows == summary["faces"] > 0
    assert storage.exists(run_file(output, "contact_sheet.png"))
    # credentials stay in the environment: not in the written config or the job's output
    written = storage.read_bytes(run_file(output, "config.yaml")).decode() + done.stdout + done.stderr
    assert "testing-secret" not in written


def test_job_shows_its_progress_and_puts_rays_own_output_in_the_run_log(preprocess_job):
    shown = preprocess_job.done.stdout + preprocess_job.done.stderr
    summary = json.loads(storage.read_bytes(run_file(preprocess_job.output, "_summary.json")))
    assert f"preprocess: {summary['inputs']}/{summary['inputs']} images (100%)" in shown
    # Ray Data's progress records and the C++ core's lines are not on the job's screen...
    for ray_line in ("logging_progress", "streaming_executor", "core_worker", "Total Progress", "(raylet)"):
        assert ray_line not in shown
    # ...but in the log file the job named
    log_file = re.search(r"Ray's own output goes to (\S+\.log)", shown).group(1)
    assert "Execution plan of Dataset" in pathlib.Path(log_file).read_text()


def test_submitted_job_with_bad_config_fails_fast(ray_cluster, bucket):
    done = ray_cluster.submit(["python", "jobs/preprocess.py", "--layout", "jaffe", "--input",
                               f"{bucket}/nowhere", "--output", f"{bucket}/x", "--size", "-1"],
                              working_dir=str(ROOT))
    assert done.returncode != 0
    assert "face.size: -1 must be > 0" in done.stdout + done.stderr
