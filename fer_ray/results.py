"""Committed results: what a finished run publishes, and how every reader finds it.

A job writes under a prefix of its own run, `<output>/runs/<run id>/`, and publishes it
by writing `<output>/_commit.json` last: one small object that names the run and lists
its files. Object stores have no atomic rename, but one object appears whole or not at
all, so a reader sees the previous result or the new one, never a mix; a run that fails
or is killed before that write leaves the previous result as it was. The superseded
run's files are removed only after the new commit.

Readers (synthesis, training, tuning, evaluation, prediction) read the listed files only,
and refuse, with what to do, an output that has no commit.

Without fer-ray: `json.load` the marker and read the files it lists, e.g.
`pq.read_table([f"{out}/{p}" for p in commit["files"]["faces"]])`.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray.data
import yaml
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from fer_ray import schema, storage
from fer_ray.config import ConfigError, RetryConfig
from fer_ray.logs import say
from fer_ray.runtime import LIGHT_CPUS

log = logging.getLogger(__name__)

COMMIT_FILE = "_commit.json"
RUNS_DIR = "runs"
CHECKPOINTS_DIR = "_checkpoints"  # Ray Data's row checkpoints of unfinished runs (pipelines.runs)
FORMAT = "fer-ray-commit/1"
# What earlier versions wrote straight into the output; superseded by a first commit.
LEGACY_OUTPUTS = ("faces", "manifest", "mixed", "predictions", "contact_sheets", "_summary.json",
                  "contact_sheet.png")


@dataclass
class Commit:
    """A published result: its job, its run and its files (paths relative to `output`)."""
    output: str
    job: str
    run: str
    files: dict[str, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # e.g. where the summary and config are

    def uris(self, folder: str) -> list[str]:
        return [storage.join(self.output, path) for path in self.files.get(folder, [])]

    def run_uri(self, *parts: str) -> str:
        return run_uri(self.output, self.run, *parts)

    def config(self) -> dict:
        """The run's resolved configuration, as the job wrote it."""
        return yaml.safe_load(storage.read_bytes(self.run_uri("config.yaml"))) or {}

    def summary(self) -> dict:
        return json.loads(storage.read_bytes(self.run_uri("_summary.json")))

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "job": self.job, "run": self.run, "files": self.files,
                           "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           **self.info}, indent=1).encode()


def run_uri(output: str, run_id: str, *parts: str) -> str:
    return storage.join(output, RUNS_DIR, run_id, *parts)


def read_commit(output: str) -> Commit | None:
    """The output's current commit, or None when nothing was ever committed there."""
    try:
        data = json.loads(storage.read_bytes(storage.join(output, COMMIT_FILE)))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{storage.join(output, COMMIT_FILE)} is not a fer-ray commit marker")
    info = {k: v for k, v in data.items() if k not in ("format", "job", "run", "files")}
    return Commit(output, data["job"], data["run"], data["files"], info)


def committed(uri: str, field_name: str, jobs: tuple[str, ...] = (), folder: str = "") -> Commit:
    """The committed result at `uri`, or a ConfigError for `field_name` that says why there
    is none (an interrupted run, an older layout, not a fer-ray output) and what to do."""
    commit = read_commit(uri)
    if commit is None:
        raise ConfigError(f"{field_name}: {uncommitted_reason(uri)}")
    if jobs and commit.job not in jobs:
        raise ConfigError(f"{field_name}: {uri} holds a {commit.job} result; expected the output of "
                          f"{' or '.join(jobs)}")
    if folder and folder not in commit.files:
        raise ConfigError(f"{field_name}: the {commit.job} result at {uri} has no {folder}/ files")
    return commit


def uncommitted_reason(uri: str) -> str:
    staged = storage.join(uri, RUNS_DIR)
    if storage.exists(staged):
        return (f"{uri} holds no committed result yet: a run writing there was interrupted or is still "
                f"running; run the same command again to resume it (its partial files are never read)")
    if any(storage.exists(storage.join(uri, name)) for name in ("faces", "mixed")):
        return (f"{uri} was written by an older fer-ray without a {COMMIT_FILE} marker, so it cannot "
                f"be told from a partial output; run the job again to publish it")
    return f"{uri} holds no fer-ray result (no {COMMIT_FILE}); give the output of a finished run"


def publish(commit: Commit, retry: RetryConfig | None = None) -> None:
    """Make `commit` the output's result: the marker is written last, in one piece; then
    the files of every other run (and of earlier layouts) go.

    Once the marker is written the run is published, whatever follows: storage that fails
    while the superseded files are removed (down past the retries, or refusing deletes)
    leaves them for the next publish into this output (readers take only the files the
    marker lists), and says so."""
    storage.write_bytes(storage.join(commit.output, COMMIT_FILE), commit.to_json(), retry)
    try:
        remove_superseded(commit.output, commit.run, retry)
    except (storage.StorageUnavailable, OSError) as err:
        log.warning("removing the files superseded by run %s: %s", commit.run, err)
        say(f"{commit.output}: run {commit.run} is published, but storage failed while the files it supersedes "
            f"were removed; readers ignore them, and the next run published there removes them")


def remove_superseded(output: str, keep_run: str, retry: RetryConfig | None = None) -> None:
    runs = storage.join(output, RUNS_DIR)
    for entry in storage.list_dirs(runs, retry):
        if entry != keep_run:
            storage.remove_dir(storage.join(runs, entry), retry)
    for name in (CHECKPOINTS_DIR, *LEGACY_OUTPUTS):
        storage.remove_dir(storage.join(output, name), retry)


def commit_tables(output: str, job: str, tables: dict[str, list[pa.Table]], run_config: dict | None = None) -> Commit:
    """Publish tables made outside a job (a subset, a benchmark's faces) as a committed
    result that every reader takes: one Parquet file per table, then the marker."""
    run = f"tables-{uuid.uuid4().hex[:12]}"
    files: dict[str, list[str]] = {}
    for folder, parts in tables.items():
        for i, table in enumerate(parts):
            fs, path = storage.resolve(run_uri(output, run, folder, f"part-{i:05d}.parquet"))
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pq.write_table(table, path, filesystem=fs, **schema.parquet_options(table))
            files.setdefault(folder, []).append(storage.relative(storage.to_uri(fs, path), output))
    storage.write_bytes(run_uri(output, run, "config.yaml"), yaml.safe_dump(run_config or {}).encode())
    commit = Commit(output, job, run, files)
    publish(commit)
    return commit


def arrow_dataset(uris: list[str]) -> pads.Dataset:
    """A pyarrow dataset over committed Parquet files (all on one store)."""
    fs, _ = storage.resolve(uris[0])
    return pads.dataset([storage.resolve(uri)[1] for uri in uris], filesystem=fs, format="parquet")


def read_dataset(uris: list[str], columns: list[str] | None = None, where=None,
                 task_args: dict | None = None) -> ray.data.Dataset:
    """Committed Parquet files as a Ray dataset, one block per file read by a task that needs a
    tenth of a CPU (or what `task_args` ask: a map whose task asks the same is fused into the
    read task); `where`, a pyarrow compute expression, keeps the rows it is true for. Ray
    Data's read_parquet (and its default map and filter tasks) need a whole free CPU each: in a
    Tune sweep whose trials' placement groups hold all but 0.99 of the CPUs (a stopped trial's
    group not yet released is enough) they waited forever for one."""
    args = dict(task_args or {"num_cpus": LIGHT_CPUS})
    num_cpus = args.pop("num_cpus")
    with warnings.catch_warnings():  # retries have no named parameter in Ray 2.60 (stages.base says more)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ray.data.read_datasource(CommittedFiles(uris, columns, where), num_cpus=num_cpus,
                                        ray_remote_args=args or None, override_num_blocks=max(1, len(uris)))


class CommittedFiles(Datasource):
    """Committed Parquet files (their URIs, all on one store), one read task each."""

    def __init__(self, uris: list[str], columns: list[str] | None = None, where=None):
        self.uris, self.columns, self.where = list(uris), columns, where

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        fs, _ = storage.resolve(self.uris[0]) if self.uris else (None, "")
        return [self.task(fs, storage.resolve(uri)[1]) for uri in self.uris]

    def task(self, fs, path: str) -> ReadTask:
        columns, where = self.columns, self.where
        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=[path])
        # a passing storage error is retried as every storage call is (Ray retries crashed tasks only)
        return ReadTask(lambda: [storage.retrying(f"read {path}", lambda: pq.read_table(
            path, filesystem=fs, columns=columns, filters=where))], meta)


def read_table(uri: str, folder: str, columns: list[str] | None = None) -> pa.Table:
    """One folder of a committed result as a table (plain pyarrow, no Ray)."""
    files = committed(uri, "output", folder=folder).uris(folder)
    return arrow_dataset(files).to_table(columns=columns)
