"""Ray Train's failure handling, for real: the training job's whole worker group is
SIGKILLed after two epoch checkpoints (by the session fixture `training_job`); the run
must restart from the last checkpoint and lose no epoch."""
from __future__ import annotations

import psutil
import pytest

from tests.conftest import TRAIN_JOB

pytestmark = pytest.mark.integration


def test_killed_worker_group_run_finishes_from_last_checkpoint(training_job):
    killed = training_job.killed
    assert killed, "no training worker was killed"
    history = training_job.report["history"]
    epochs = TRAIN_JOB["epochs"]
    assert [h["epoch"] for h in history] == list(range(epochs))  # every epoch once, none lost
    restarts = [h for h in history if h["restored_from_epoch"] >= 0]
    assert restarts, f"no epoch ran after a restore; killed {killed}; history {history}"
    first = restarts[0]
    assert first["epoch"] == first["restored_from_epoch"] + 1  # continued right after the checkpoint
    for line in killed:
        pid = int(line.split()[0])
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
