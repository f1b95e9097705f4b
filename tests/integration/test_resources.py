"""Runs fitted to the session's 2-CPU, GPU-less cluster: the default sweep and training
finish (their worker groups used to take every CPU, or wait forever for the one the Tune trial
itself held), and requests the cluster can never grant fail at once, naming the field, before
any output is touched."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from fer_ray import storage
from fer_ray.config import ConfigError, PreprocessConfig, TrainConfig, TuneConfig
from fer_ray.pipelines import preprocess
from fer_ray.training import sweep, trainer
from tests.cluster import stage_actors, wait_for

pytestmark = pytest.mark.integration

HANG = 600  # seconds: far beyond a one-epoch trial here; a run waiting on resources never ends


def cli(command: str, flags: dict, address: str) -> subprocess.CompletedProcess:
    """`fer-ray <command> --flag=value ...` as its own driver on the session cluster; a run that
    waits on resources fails by the timeout instead of hanging the suite."""
    return subprocess.run([sys.executable, "-m", "fer_ray.cli", command, *[f"--{k}={v}" for k, v in flags.items()]],
                          env={**os.environ, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=HANG)


def test_default_tune_fits_the_two_cpu_cluster_and_finishes(fer_shards, bucket, ray_cluster):
    output = f"{bucket}/sweeps/fitted"
    # cpus_per_worker and max_concurrent left at their defaults
    done = cli("tune", {"data": fer_shards, "output": output, "models": "dexpression_fer", "trials": 1,
                        "epochs": 1, "workers": 2, "batch-sizes": 32}, ray_cluster.address)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = pd.read_csv(io.BytesIO(storage.read_bytes(storage.join(output, "results.csv"))))
    assert list(results["status"]) == ["ok"] and list(results["epochs_run"]) == [1]
    written = read_yaml(storage.join(output, "trials", results["trial"][0], "config.yaml"))
    # the resolved share: 2 workers + the trial's 0.01 + 1 CPU for Ray Data's reading = 2 CPUs
    assert written["cpus_per_worker"] == 0.49


def test_default_train_fits_the_two_cpu_cluster_and_finishes(fer_shards, bucket, ray_cluster):
    output = f"{bucket}/runs/fitted"
    done = cli("train", {"data": fer_shards, "output": output, "epochs": 1, "workers": 2}, ray_cluster.address)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read_yaml(storage.join(output, "config.yaml"))["cpus_per_worker"] == 0.5
    assert storage.exists(storage.join(output, "metrics.json"))


def read_yaml(uri: str) -> dict:
    return yaml.safe_load(storage.read_bytes(uri))


def untouched(output: str) -> bool:
    return not storage.exists(output)


def test_gpu_training_on_a_cluster_without_gpus_fails_before_any_training(fer_shards, bucket, ray_cluster):
    cfg = TrainConfig(data=fer_shards, output=f"{bucket}/runs/no-gpu", workers=2, gpu=True)
    with pytest.raises(ConfigError, match=r"^gpu: 2 workers x 1 GPU need 2 GPUs, the cluster has none"):
        trainer.run(cfg)
    assert untouched(cfg.output)


def test_explicit_cpus_the_cluster_cannot_hold_fail_naming_the_field(fer_shards, bucket, ray_cluster):
    cfg = TrainConfig(data=fer_shards, output=f"{bucket}/runs/too-many-cpus", workers=2, cpus_per_worker=1.0)
    with pytest.raises(ConfigError, match=r"^cpus_per_worker: .* need 3 CPUs, the cluster has 2 CPUs: use "):
        trainer.run(cfg)
    tune_cfg = TuneConfig(trials=4, max_concurrent=3, train=TrainConfig(data=fer_shards, output=f"{bucket}/sweeps/x3"))
    with pytest.raises(ConfigError, match=r"^max_concurrent: 3 trials at once"):
        sweep.run(tune_cfg)
    assert untouched(cfg.output) and untouched(tune_cfg.train.output)


def test_gpu_face_actors_on_a_cluster_without_gpus_fail_from_the_cli(tmp_path, ray_cluster):
    rows = "emotion,pixels,Usage\n" + "3," + " ".join(["128"] * 2304) + ",Training\n"
    (tmp_path / "fer2013.csv").write_text(rows)
    output = tmp_path / "out"
    done = cli("preprocess", {"layout": "fer2013", "input": tmp_path / "fer2013.csv", "output": output,
                              "num-gpus": 1}, ray_cluster.address)
    assert done.returncode == 2, done.stderr[-3000:]
    # the raylet's own warnings (a nearly full disk, say) are forwarded to stderr at any time
    ours = [line for line in done.stderr.strip().splitlines() if "(raylet)" not in line]
    assert ours[-1].startswith(
        "fer-ray: configuration error: num_gpus: a face actor asks for 1 GPU, the cluster has none")
    assert not output.exists()
    with pytest.raises(ConfigError, match="^num_gpus: "):  # the same check in-process
        preprocess.run(PreprocessConfig(layout="fer2013", input=str(tmp_path / "fer2013.csv"),
                                        output=str(output), num_gpus=0.5))


def test_a_failed_run_lets_go_of_its_cpus_while_its_traceback_is_kept(ray_cluster):
    """A failed run's actors go when it fails, even while something keeps its traceback (pytest
    keeps a failed test's, a notebook the last one): kept alive, they held their CPUs and the
    next run in the process waited for them forever."""
    import ray

    from fer_ray import runtime

    runtime.start_ray()

    class RefusesEveryBatch:
        def __call__(self, batch):
            raise ValueError("refused")

    failing = ray.data.range(4, override_num_blocks=2).map_batches(RefusesEveryBatch, concurrency=1, num_cpus=1)
    with pytest.raises(Exception) as failed:
        failing.materialize()
    kept = failed.value.__traceback__
    wait_for(lambda: not stage_actors("RefusesEveryBatch"), 60, "the failed run's actor to go")
    assert kept is not None
