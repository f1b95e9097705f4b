"""Preprocessing, synthesis, labelling and training through `ray job submit` on a head node and
two worker nodes on this machine (tests/cluster.py LocalCluster): the face and segment actors'
batches, the fusing tasks and the training workers ran on both workers (Ray's state API says
where), the outputs equal a run on the session's single node, and a job
whose second worker node loses its raylet in mid-run (SIGKILL, while a batch runs there) still
finishes with the same outputs: every input one manifest/videos row, no face row lost or doubled.
Training that loses a node running one of its workers resumes from its last checkpoint.

One cluster for the module (a node costs ~200 MB and a few processes); the preprocessing node-loss
test replaces the lost node afterwards, as an autoscaler would, for the labelling one."""
from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter

import pytest

from fer_ray import cli, storage
from tests.cluster import wait_for
from tests.conftest import TRAIN_JOB
from tests.integration.helpers import read_output
from tests.integration.test_label_videos import ARGS, check_outputs, write_inputs
from tests.multinode.helpers import (
    ROOT,
    batches_by_node,
    job_tasks,
    rows,
    stage_tasks,
    submit,
    submit_losing_a_batch,
    train_worker_nodes,
)

pytestmark = pytest.mark.job

# a labelling run's own: when it ran and where its WebVTT files are (under its own output)
LABEL_RUN_COLUMNS = ("elapsed_s", "webvtt")
LABEL_FOLDERS = ("videos", "frames", "tracks", "segments")


def preprocess_args(preprocess_job, output: str) -> list[str]:
    """The session's preprocess job (JAFFE-style sample on S3, run on the single head node),
    writing to `output` instead."""
    args = list(preprocess_job.args)
    args[args.index("--output") + 1] = output
    return args


@pytest.fixture(scope="module")
def spread_preprocess(three_nodes, preprocess_job, bucket):
    """The preprocess job on the three nodes. Its face actors start before any batch is handed
    out: the sample's 177 images make only 3 or 4 batches, and the actor that was ready first
    once took all 3 (an actor is handed 2 at once, and took the third when one was done), so
    the other node got none. A real dataset's thousands of batches wait for a free actor."""
    output = f"{bucket}/multinode/jaffe"
    done = submit(three_nodes, "preprocess", preprocess_args(preprocess_job, output),
                  env={"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output


def test_preprocess_job_spreads_over_both_worker_nodes(three_nodes, spread_preprocess):
    batches = batches_by_node(three_nodes, spread_preprocess, "FaceStage")
    assert set(batches) == {worker.node_id for worker in three_nodes.workers}, batches
    print(f"face batches per worker node: {sorted(batches.values())}")


def test_preprocess_on_three_nodes_equals_one_node(spread_preprocess, preprocess_job):
    faces = rows(spread_preprocess, "faces")
    assert faces == rows(preprocess_job.output, "faces")
    assert len({face["sample_id"] for face in faces}) == len(faces) > 0
    assert rows(spread_preprocess, "manifest") == rows(preprocess_job.output, "manifest")


def test_preprocess_job_survives_losing_a_node(three_nodes, spread_preprocess, preprocess_job, bucket):
    output, lost = submit_losing_a_batch(three_nodes, "preprocess", lambda out: preprocess_args(preprocess_job, out),
                                         f"{bucket}/multinode/jaffe-node-lost", "FaceStage")
    three_nodes.replace(lost)
    check_lost_batches_redone(three_nodes, output, "FaceStage", lost.node_id)
    manifest = read_output(output, "manifest").column("source_uri").to_pylist()
    raw = preprocess_job.args[preprocess_job.args.index("--input") + 1]
    assert sorted(manifest) == sorted(set(manifest)) and len(manifest) == len(storage.list_files(raw))
    assert rows(output, "faces") == rows(spread_preprocess, "faces")
    assert rows(output, "manifest") == rows(spread_preprocess, "manifest")


def check_lost_batches_redone(cluster, output: str, stage: str, lost_node: str) -> None:
    """The batches running on the lost node failed there and were finished on another node."""
    attempts = stage_tasks(cluster, output, stage)
    failed = {task.task_id for task in attempts if task.node_id == lost_node and task.state == "FAILED"}
    redone = {task.task_id for task in attempts if task.node_id != lost_node and task.state == "FINISHED"}
    assert failed and failed <= redone, Counter((task.node_id, task.state) for task in attempts)


def test_synthesis_job_spreads_its_units_and_equals_one_node(three_nodes, jaffe_faces, synthesized, bucket):
    """jobs/synthesize.py with the session's single-node synthesis's options (region fusion,
    every pair): its fusing tasks (Ray Data tasks, not actors) ran on both worker nodes, and
    its mixed faces and manifest are those of the single node's run."""
    output = f"{bucket}/multinode/synth"
    done = submit(three_nodes, "synthesize", ["--input", jaffe_faces, "--output", output])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fusing = Counter(task.node_id for task in job_tasks(three_nodes, output, lambda name: "_run_task_stage" in name,
                                                        "FINISHED"))
    print(f"fusing tasks per worker node: {sorted(fusing.values())}")
    assert set(fusing) == {worker.node_id for worker in three_nodes.workers}, fusing
    reference, _ = synthesized
    for folder in ("mixed", "manifest"):
        assert rows(output, folder) == rows(reference, folder), folder
    assert len(rows(output, "mixed")) > 0


@pytest.fixture(scope="module")
def videos(bucket, tmp_path_factory) -> str:
    """tests/integration/test_label_videos.py's videos (good ones and one of each bad kind) on S3."""
    source = f"{bucket}/multinode/videos"
    for path in sorted(write_inputs(tmp_path_factory.mktemp("multinode-videos")).iterdir()):
        storage.write_bytes(f"{source}/{path.name}", path.read_bytes())
    return source


@pytest.fixture(scope="module")
def one_node_labels(ray_cluster, videos, bucket) -> str:
    """The videos labelled on the session's single head node: the reference."""
    output = f"{bucket}/multinode/labels-one-node"
    done = ray_cluster.submit(["python", "jobs/label_videos.py", "--input", videos, "--output", output, *ARGS],
                              working_dir=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output


def label_rows(output: str) -> dict[str, list[dict]]:
    found = {folder: rows(output, folder, drop=LABEL_RUN_COLUMNS) for folder in LABEL_FOLDERS}
    webvtt = [uri.rsplit("/", 1)[-1] for uri in read_output(output, "videos").column("webvtt").to_pylist() if uri]
    return {**found, "webvtt": sorted(webvtt)}


def test_label_videos_job_spreads_and_survives_losing_a_node(three_nodes, one_node_labels, videos, bucket):
    """One labelling run on the three nodes serves both checks (a run costs about a minute here):
    its segment batches ran on both workers, and losing the second one in mid-run changed no row
    of the single node's run. A new node replaces the lost one: on the one 1-CPU node left, its
    segment and classifier actors hold 0.9 CPU, and a probe task to redo (0.2) found no room."""
    kept = three_nodes.workers[0]

    def label_args(output: str) -> list[str]:
        return ["--input", videos, "--output", output, *ARGS]

    output, lost = submit_losing_a_batch(three_nodes, "label_videos", label_args,
                                         f"{bucket}/multinode/labels-node-lost", "SegmentStage", replace=True)
    attempts = Counter((task.node_id, task.state) for task in stage_tasks(three_nodes, output, "SegmentStage"))
    print(f"segment batch attempts per (node, state): {dict(attempts)}")
    assert {kept.node_id, lost.node_id} <= {node for node, _ in attempts}, attempts
    check_lost_batches_redone(three_nodes, output, "SegmentStage", lost.node_id)
    names = read_output(output, "videos").column("video_uri").to_pylist()
    assert sorted(names) == sorted(set(names)) and len(names) == len(storage.list_files(videos))
    check_outputs(output)
    assert label_rows(output) == label_rows(one_node_labels)


# The session's training job, cut to 6 epochs: the node is lost after the second, and the 4 left
# (about 10 s each on these nodes) are time enough to lose it mid-run; the learning is tested
# elsewhere. 12 epochs made this the suite's slowest test (205 s).
NODE_LOST_TRAIN_JOB = {**TRAIN_JOB, "epochs": 6}


def test_training_job_resumes_from_its_checkpoint_after_losing_a_node(three_nodes, fer_shards, bucket):
    """`jobs/train.py` with two workers of 0.5 CPU (the cluster's 2 CPUs less the one the trainer
    leaves Ray Data), spread: one on each worker node. Once two epoch checkpoints are on
    storage, a node that runs a training worker loses its raylet (the worker dies with it) and
    a new node takes its place, as an autoscaler would start one: Ray Train restarts the
    worker group from the last checkpoint, and no epoch is lost or run twice."""
    output = f"{bucket}/multinode/train-node-lost"
    args = ["--data", fer_shards, "--output", output, "--placement=spread",
            *cli.flags(NODE_LOST_TRAIN_JOB)]
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(done=submit(three_nodes, "train", args)), daemon=True)
    thread.start()
    checkpoints = f"{output}/train"
    wait_for(lambda: not thread.is_alive() or storage.exists(checkpoints) and sum(
        uri.endswith("checkpoint.pt") for uri in storage.list_files(checkpoints)) >= 2, 400, "two epoch checkpoints")
    assert thread.is_alive(), outcome
    nodes = wait_for(lambda: train_worker_nodes(three_nodes, output), 60, "the training workers' nodes")
    print(f"training workers on {len(nodes)} of the 2 worker nodes")
    assert nodes == {worker.node_id for worker in three_nodes.workers}  # spread: one on each
    lost = next(worker for worker in three_nodes.workers if worker.node_id in nodes)
    os.kill(lost.raylet().pid, signal.SIGKILL)
    three_nodes.replace(lost)
    thread.join(timeout=900)
    done = outcome.get("done")
    assert done is not None and done.returncode == 0, done and done.stdout[-3000:] + done.stderr[-3000:]
    history = json.loads(storage.read_bytes(f"{output}/metrics.json"))["history"]
    assert [h["epoch"] for h in history] == list(range(NODE_LOST_TRAIN_JOB["epochs"]))
    restarts = [h for h in history if h["restored_from_epoch"] >= 0]
    assert restarts, history
    assert restarts[0]["epoch"] == restarts[0]["restored_from_epoch"] + 1  # right after the checkpoint
