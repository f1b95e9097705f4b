"""Session-wide fixtures: one S3 test server and one Ray head node, started on first use."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import threading
from dataclasses import dataclass, field

import pytest

from tests.cluster import HeadNode, S3Server, enable_token_auth, train_workers, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Ray reads its auth settings when it is first imported: set them before any test module
# (or fer_ray) imports ray.
enable_token_auth()


@pytest.fixture(scope="session", autouse=True)
def run_logs(tmp_path_factory):
    """Each CLI call writes a log file: the session's go to a temp dir, not the home directory."""
    os.environ["FER_RAY_LOG_DIR"] = str(tmp_path_factory.mktemp("fer-ray-logs"))


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server().start()
    os.environ.update(server.env())  # before Ray starts, so every Ray worker inherits it
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory):
    """A real head node; the test process is connected to it as a Ray driver. Weights
    staged from URIs go to a cache of the session's own (workers inherit the variable)."""
    import ray

    os.environ["FER_RAY_CACHE"] = str(tmp_path_factory.mktemp("fer-ray-cache"))
    head = HeadNode(num_cpus=2).start()
    try:
        ray.init(address=head.address, log_to_driver=False)
        yield head
    finally:
        ray.shutdown()
        head.stop()


@pytest.fixture(scope="session")
def bucket(s3_server):
    s3_server.create_bucket("fer-ray-test")
    return "s3://fer-ray-test"


@pytest.fixture(scope="session")
def fer_shards(bucket, ray_cluster):
    """Preprocessed FER2013-style sample faces on the S3 server (scale 4: 515 faces of
    48 subjects, subject-disjoint train/val/test): the training tests' data."""
    from fer_ray.config import PreprocessConfig
    from fer_ray.pipelines import preprocess
    from fer_ray.sample_data import write_sample_data

    write_sample_data(f"{bucket}/train-raw", scale=4, layouts=("fer2013",))
    output = f"{bucket}/train-data/fer2013"
    preprocess.run(PreprocessConfig(layout="fer2013", input=f"{bucket}/train-raw/fer2013/fer2013.csv",
                                    output=output))
    return output


# Bad inputs added to the BAUM-2-style sample on S3, beside its own broken clip and missing label
# file; they take clips of subjects that are there already, so the subject split is the sample's.
BAUM2_BAD_INPUTS = {"S002/avi/090.avi": "empty label file", "S004/avi/091.avi": "label 9: out of range",
                    "S006/avi/092.avi": "0-byte video", "S099/emotion/001.txt": "a subject folder without avi/",
                    "readme.txt": "not a clip"}


@pytest.fixture(scope="session")
def baum2_clips(bucket, ray_cluster):
    """The BAUM-2-style sample archive (`fer-ray sample-data`) on S3 with BAUM2_BAD_INPUTS, preprocessed
    on Ray into clips/ (16 frames, 48 px grey): (output URI, summary). Split by subject 0.6/0.2/0.2, so
    that 2 of the 10 subjects (8 clips) are held out for testing and 2 for validation: the training
    tests train the clip families on it."""
    from fer_ray import storage
    from fer_ray.config import PreprocessConfig, SplitConfig
    from fer_ray.pipelines import preprocess
    from fer_ray.sample_data import write_sample_data

    raw = f"{bucket}/clips-raw/baum2"
    write_sample_data(f"{bucket}/clips-raw", layouts=("baum2",))
    clip = storage.read_bytes(f"{raw}/S001/avi/001.avi")
    extras = {"S002/avi/090.avi": clip, "S002/emotion/090.txt": b"", "S004/avi/091.avi": clip,
              "S004/emotion/091.txt": b"9\n", "S006/avi/092.avi": b"", "S006/emotion/092.txt": b"3\n",
              "S099/emotion/001.txt": b"5\n", "readme.txt": b"BAUM-2 sample\n"}
    for name, data in extras.items():
        storage.write_bytes(f"{raw}/{name}", data)
    output = f"{bucket}/clips/baum2"
    cfg = PreprocessConfig(layout="baum2", input=raw, output=output, split=SplitConfig(train=0.6, val=0.2, test=0.2))
    return output, preprocess.run(cfg)


@dataclass
class JobRun:
    """A `ray job submit` that succeeded: its arguments, output URI and printed output."""
    args: list[str]
    output: str
    done: subprocess.CompletedProcess
    killed: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # metrics.json as the job left it


@pytest.fixture(scope="session")
def preprocess_job(bucket, ray_cluster):
    """`ray job submit jobs/preprocess.py` on the JAFFE-style sample, S3 in and out: the
    preprocess job test's subject and the synthesis tests' input (one job does both)."""
    from fer_ray.sample_data import write_sample_data

    write_sample_data(f"{bucket}/job-raw", layouts=("jaffe",))
    args = ["--layout", "jaffe", "--input", f"{bucket}/job-raw/jaffe", "--output", f"{bucket}/job-out/jaffe"]
    done = ray_cluster.submit(["python", "jobs/preprocess.py", *args], working_dir=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return JobRun(args, args[-1], done)


@pytest.fixture(scope="session")
def jaffe_faces(preprocess_job):
    """Preprocessed JAFFE-style faces on S3 (10 subjects x 7 expressions, 2-3 takes each)."""
    return preprocess_job.output


# The training job every training test looks at: small and CPU-only, 2 workers of half a
# CPU leave the 2-CPU test cluster room for Ray Data; 12 epochs learn the sample faces.
TRAIN_JOB = {"model": "dexpression_fer", "epochs": 12, "batch_size": 32, "workers": 2,
             "cpus_per_worker": 0.5, "max_failures": 2, "seed": 0}


@pytest.fixture(scope="session")
def training_job(ray_cluster, fer_shards, bucket):
    """`ray job submit jobs/train.py`, data and run on S3, as users run it; once two epoch
    checkpoints are on storage the whole training worker group is SIGKILLed, so the run
    must be restarted by Ray Train from its last checkpoint and still finish well."""
    from fer_ray import cli, storage

    output = f"{bucket}/runs/dexpression"
    args = ["--data", fer_shards, "--output", output,
            *cli.flags(TRAIN_JOB)]
    outcome = {}
    submit = threading.Thread(target=lambda: outcome.update(done=ray_cluster.submit(
        ["python", "jobs/train.py", *args], working_dir=str(ROOT))), daemon=True)
    submit.start()
    checkpoints = f"{output}/train"
    # Two checkpoints on storage: the first is then surely registered with Ray Train.
    wait_for(lambda: storage.exists(checkpoints) and sum(
        u.endswith("checkpoint.pt") for u in storage.list_files(checkpoints)) >= 2, 400, "two epoch checkpoints")
    victims = wait_for(train_workers, 30, "the training workers")
    killed = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in victims]
    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)
    submit.join(timeout=900)
    done = outcome.get("done")
    assert done is not None and done.returncode == 0, (killed, done and done.stdout[-3000:] + done.stderr[-3000:])
    # later tests resume this run, which rewrites metrics.json: keep the job's own
    return JobRun(args, output, done, killed, json.loads(storage.read_bytes(f"{output}/metrics.json")))


@pytest.fixture(scope="session")
def synthesized(jaffe_faces, bucket):
    """Region fusion of the JAFFE-style faces, run in this process: (output URI, summary)."""
    from fer_ray.config import SynthesizeConfig
    from fer_ray.pipelines import synthesize

    output = f"{bucket}/synth/region"
    return output, synthesize.run(SynthesizeConfig(input=jaffe_faces, output=output))
