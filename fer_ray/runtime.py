"""Joining Ray: the one place the jobs and the CLI call `ray.init`."""
from __future__ import annotations

import os

import ray

# Ray keeps about one idle worker process per CPU and kills the others after a second
# idle, and Ray Data's bookkeeping actors (stats, autoscaling coordinator, actor
# locations) count among them. On a small node the process that just wrote a Parquet file
# was therefore killed, and each next write started a new Python process and imported Ray
# Data again: about a core-second each, and seconds of latency at the end of every job
# (bench/preprocess.py). A few spare idle workers keep one warm for the next short task.
SPARE_IDLE_WORKERS = 4
SOFT_LIMIT_VARIABLE = "RAY_num_workers_soft_limit"


def start_ray() -> None:
    """Connect to the cluster named by RAY_ADDRESS (or a running local one), else start a
    local instance. The worker limit applies to an instance started here; a cluster's
    nodes get it from their own start command (see cluster/)."""
    if ray.is_initialized():
        return
    os.environ.setdefault(SOFT_LIMIT_VARIABLE, worker_soft_limit(os.cpu_count() or 1))
    ray.init()


def worker_soft_limit(cpus: int) -> str:
    """The value of RAY_num_workers_soft_limit for a node with `cpus` CPUs."""
    return str(cpus + SPARE_IDLE_WORKERS)
