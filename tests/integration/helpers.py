"""Reading outputs back the way a user would: plain pyarrow, no Ray."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict

import pyarrow.parquet as pq

from fer_ray import labels, results, storage
from fer_ray.config import PreprocessConfig
from fer_ray.pipelines import preprocess, runs


def read_output(output_uri: str, folder: str):
    """A folder of the output's committed result, read as a user would without Ray: the
    files that _commit.json lists, with plain pyarrow."""
    commit = json.loads(storage.read_bytes(storage.join(output_uri, "_commit.json")))
    fs, _ = storage.resolve(output_uri)
    paths = [storage.resolve(storage.join(output_uri, path))[1] for path in commit["files"][folder]]
    return pq.ParquetDataset(paths, filesystem=fs).read()


def run_file(output_uri: str, name: str) -> str:
    """The URI of a file of the output's committed run (_summary.json, config.yaml, ...)."""
    commit = json.loads(storage.read_bytes(storage.join(output_uri, "_commit.json")))
    return storage.join(output_uri, "runs", commit["run"], name)


def run_preprocess(layout: str, input_uri: str, output_uri: str, **fields) -> dict:
    """Fields by leaf name: the job's own (limit, workers, ...) or face.* ones (size, ...)."""
    cfg = PreprocessConfig(layout=layout, input=input_uri, output=output_uri, batch_size=8)
    for key, value in fields.items():
        setattr(cfg if hasattr(cfg, key) else cfg.face, key, value)
    return preprocess.run(cfg)


def faces_by_id(output_uri: str) -> dict:
    table = read_output(output_uri, "faces").to_pylist()
    return {row["sample_id"]: row for row in table}


def expected_pairs(faces: list[dict]) -> int:
    """Mixed faces synthesis should make with one face per expression: the sum over
    subjects of n(n-1), n = the subject's distinct basic expressions."""
    expressions = defaultdict(set)
    for row in faces:
        if row["label_name"] in labels.BASIC7:
            expressions[row["subject"]].add(row["label_name"])
    return sum(len(e) * (len(e) - 1) for e in expressions.values())


def committed_units(output: str) -> int:
    """Write tasks Ray has committed in the output's unfinished runs."""
    root = storage.join(output, results.CHECKPOINTS_DIR)
    return sum(1 for uri in storage.list_files(root) if not uri.endswith(runs.PENDING_FILE)) if (
        storage.exists(root)) else 0


def kill_cli_after_units(args: list[str], output: str, ray_address: str, units: int = 1,
                         sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Run `fer-ray <args>` as its own driver and send it `sig` once `units` write tasks have
    committed; the output then holds an interrupted run and no commit. Returns the driver's
    exit code and what it wrote to stderr. (The first unit is the safe moment: on the small
    sample the units come about a second apart, and Ray may join the last ones into one
    write that the commit follows at once, so waiting for a second raced the run's end.)"""
    from tests.cluster import wait_for

    with tempfile.TemporaryFile("w+") as stderr:
        driver = subprocess.Popen([sys.executable, "-m", "fer_ray.cli", *args], stdout=subprocess.DEVNULL,
                                  stderr=stderr, env={**os.environ, "RAY_ADDRESS": ray_address}, text=True)
        try:
            wait_for(lambda: committed_units(output) >= units or driver.poll() is not None, 300,
                     f"{units} committed units")
        finally:
            driver.send_signal(sig)
            driver.wait(120)
        stderr.seek(0)
        said = stderr.read()
    assert committed_units(output) >= units and not storage.exists(storage.join(output, "_commit.json")), (
        committed_units(output), driver.returncode, said[-3000:])
    return driver.returncode, said
