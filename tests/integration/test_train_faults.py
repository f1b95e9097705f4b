"""Ray Train's failure handling, for real: a training worker process is killed mid-run."""
from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from fer_ray import storage
from fer_ray.config import TrainConfig
from fer_ray.training import trainer

pytestmark = pytest.mark.integration
EPOCHS = 12


def train_workers() -> list[psutil.Process]:
    """Ray Train's worker actors on this machine (their process title names the actor)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::RayTrainWorker"):
            found.append(process)
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_run_finishes_from_last_checkpoint(fer_shards, tmp_path):
    cfg = TrainConfig(data=fer_shards, output=str(tmp_path / "run"), model="dexpression_fer", epochs=EPOCHS,
                      batch_size=32, workers=2, cpus_per_worker=0.5, max_failures=2, seed=1)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(report=trainer.run(cfg)), daemon=True)
    thread.start()
    checkpoints = storage.join(cfg.output, "train")
    # Two epoch checkpoints on storage: the first is then surely registered with Ray Train
    # (a file can land on storage a moment before the controller records it).
    wait_for(lambda: sum(u.endswith("checkpoint.pt") for u in storage.list_files(checkpoints)) >= 2
             if storage.exists(checkpoints) else False, 300, "two epoch checkpoints")
    victims = wait_for(train_workers, 30, "the training workers")
    killed = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in victims]
    for victim in victims:  # the whole worker group: Ray Train must restart it from the checkpoint
        os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=600)

    assert not thread.is_alive() and "report" in outcome, "the run did not finish after the kill"
    history = outcome["report"]["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))  # every epoch once, none lost
    restarts = [h for h in history if h["restored_from_epoch"] >= 0]
    assert restarts, f"no epoch ran after a restore; killed {killed}; history {history}"
    first = restarts[0]
    assert first["epoch"] == first["restored_from_epoch"] + 1  # continued right after the checkpoint
    assert all(not psutil.pid_exists(v.pid) or v.status() == psutil.STATUS_ZOMBIE for v in victims)
