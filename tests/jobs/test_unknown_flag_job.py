"""`ray job submit` of a job with a flag its CLI does not have: the job fails at once, and the
submitter sees the one line that names the flag (issue 24, bad input)."""
from __future__ import annotations

import pathlib

import pytest

pytestmark = pytest.mark.job
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_submitted_job_with_a_flag_the_cli_does_not_have_fails_naming_it(ray_cluster):
    done = ray_cluster.submit(["python", "jobs/train.py", "--data", "s3://x/y", "--no-such-flag", "3"],
                              working_dir=str(ROOT), timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert ("fer-ray train: error: unrecognized arguments: --no-such-flag 3; "
            "--help lists the flags of fer-ray train") in output
    assert "failed with exit code 2" in output  # argparse's exit code, seen by the submitter
