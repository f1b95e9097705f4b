"""What a job did on a cluster of several nodes: where its stage tasks ran (Ray's state API),
its outputs as comparable rows, and a job run while one of its nodes is lost."""
from __future__ import annotations

import math
import os
import pathlib
import signal
import threading
from collections import Counter

from ray.util.state import list_actors, list_jobs, list_tasks

from tests.cluster import DONE, LocalCluster, WorkerNode, stage_batch_task, wait_for
from tests.integration.helpers import read_output

ROOT = pathlib.Path(__file__).resolve().parents[2]


def job_id(cluster: LocalCluster, output: str) -> str | None:
    """The Ray job id of the submitted job that writes `output` (None until its driver starts)."""
    jobs = [job for job in list_jobs(address=cluster.head.dashboard) if output in (job.entrypoint or "").split()]
    return jobs[0].job_id if jobs else None


def job_tasks(cluster: LocalCluster, output: str, named, state: str | None = None, name: str | None = None) -> list:
    """The task attempts of the job that writes `output` whose name passes `named` (and is
    `name`, a filter the state API applies: a smaller answer, sooner, for a test polling it)."""
    job = job_id(cluster, output)
    if job is None:
        return []
    filters = [("job_id", "=", job)] + [(key, "=", value) for key, value in (("state", state), ("name", name)) if value]
    tasks = list_tasks(address=cluster.head.dashboard, filters=filters, limit=10_000, raise_on_missing_output=False)
    return [task for task in tasks if named(task.name)]


def stage_tasks(cluster: LocalCluster, output: str, stage: str, state: str | None = None) -> list:
    """The batches (task attempts) the actors of `stage` ran for the job that writes `output`."""
    batch = stage_batch_task(stage)
    return job_tasks(cluster, output, lambda name: name == batch, state, name=batch)


def batches_by_node(cluster: LocalCluster, output: str, stage: str) -> Counter:
    """How many batches of `stage` each node finished for the job that writes `output`."""
    return Counter(task.node_id for task in stage_tasks(cluster, output, stage, "FINISHED"))


def submit(cluster: LocalCluster, job: str, args: list[str], env: dict[str, str] | None = None):
    """`ray job submit` of jobs/<job>.py, its driver given the `env` variables."""
    settings = [f"{name}={value}" for name, value in (env or {}).items()]
    return cluster.head.submit([*(["env", *settings] if settings else []), "python", f"jobs/{job}.py", *args],
                               working_dir=str(ROOT))


def submit_losing_a_node(cluster: LocalCluster, job: str, args: list[str], output: str, stage: str,
                         replace: bool = False) -> WorkerNode:
    """`ray job submit`, and once a batch of `stage` runs or waits on the second worker node, that
    node's raylet is killed (SIGKILL, by pid): its workers and objects go with it. With `replace`,
    a new worker node joins once Ray has declared the lost one dead, as an autoscaler would start
    one. Returns the lost node, after the job ended (and succeeded)."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(done=submit(cluster, job, args)), daemon=True)
    thread.start()
    victim = cluster.workers[1]
    wait_for(lambda: any(task.node_id == victim.node_id and task.state not in DONE
                         for task in stage_tasks(cluster, output, stage)) or not thread.is_alive(),
             300, f"a {stage} batch running or queued on the second worker node")
    if not thread.is_alive():
        batches = Counter((task.node_id, task.state) for task in stage_tasks(cluster, output, stage))
        done = outcome.get("done")
        raise AssertionError(f"the job ended before a batch was handed to the second worker node; batches per "
                             f"(node, state): {dict(batches)}; the job said: {done and done.stdout[-2000:]}")
    os.kill(victim.raylet().pid, signal.SIGKILL)
    if replace:
        cluster.replace(victim)
    thread.join(timeout=600)
    done = outcome.get("done")
    assert done is not None and done.returncode == 0, done and done.stdout[-3000:] + done.stderr[-3000:]
    return victim


def submit_losing_a_batch(cluster: LocalCluster, job: str, args_of, output: str, stage: str,
                          replace: bool = False, tries: int = 3) -> tuple[str, WorkerNode]:
    """submit_losing_a_node (job arguments `args_of(output)`) until a batch of `stage` was lost
    with the node; returns the output of that try and the lost node. The state API hears of a
    batch up to a second late, so the one it shows running may have finished just before the
    kill: then nothing was lost, the run proves nothing, and the job runs again to a new output
    once a new node has taken the lost one's place."""
    for attempt in range(tries):
        where = f"{output}-{attempt}" if attempt else output
        lost = submit_losing_a_node(cluster, job, args_of(where), where, stage, replace)
        if any(task.node_id == lost.node_id and task.state == "FAILED" for task in stage_tasks(cluster, where, stage)):
            return where, lost
        print(f"try {attempt + 1}: no {stage} batch was in flight on the lost node; again")
        if not replace:
            cluster.replace(lost)
    raise AssertionError(f"in {tries} tries no {stage} batch was in flight on the node when it was lost")


def rows(output: str, folder: str, drop: tuple[str, ...] = ()) -> list[dict]:
    """A committed folder's rows, sorted, without the `drop` columns; NaN made comparable
    (NaN != NaN would make equal outputs differ)."""
    table = read_output(output, folder)
    table = table.drop_columns([name for name in drop if name in table.column_names])
    return sorted((_comparable(row) for row in table.to_pylist()), key=repr)


def _comparable(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    return value


def train_worker_nodes(cluster: LocalCluster, output: str) -> set[str]:
    """The nodes of the live Ray Train workers of the job that writes `output`."""
    job = job_id(cluster, output)
    actors = list_actors(address=cluster.head.dashboard, filters=[("job_id", "=", job), ("state", "=", "ALIVE")],
                         limit=10_000, raise_on_missing_output=False)
    return {actor.node_id for actor in actors if actor.class_name == "RayTrainWorker"}
