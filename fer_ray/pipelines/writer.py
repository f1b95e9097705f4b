"""ShardSink: each write task's rows as one Parquet file per output folder, plus its counts.

A stage's output batch carries the rows of several folders at once (faces and their
manifest rows; fused faces and theirs); a boolean column per folder (`is_face`,
`is_manifest`, `is_mixed`) says which rows go where.

Files are written under the run's own prefix (pipelines.runs), named after the write task
(`<folder>/<write id>_<task>.parquet`). With Ray Data's row checkpointing on, each write
task is a two-phase commit: Ray records the task's input ids as pending, the task writes
its files, Ray marks the ids committed; a rerun deletes the files of tasks left pending
and skips the inputs of committed ones. Ray gives that protocol only to file datasinks,
which is why ShardSink extends Ray's `_FileDatasink` (private in Ray 2.60; the version is
pinned).

Each task also writes its counts, `counts/<write id>_<task>.json`, under the same commit:
the summary of a resumed run adds up every committed task, not only this attempt's.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from ray.data.block import BlockAccessor
from ray.data.datasource.file_datasink import _FileDatasink

from fer_ray import schema, storage
from fer_ray.config import RetryConfig
from fer_ray.progress import Progress
from fer_ray.runtime import LIGHT_CPUS, SYSTEM_FAILURE_RETRIES, available_cpus

# At most one write task at a time per this many of the cluster's CPUs (each write itself
# asks for only LIGHT_CPUS). Writes are short; the cap lets Ray reuse a warm worker process
# for the next write rather than start a new one (which imports Ray Data again, ~1
# core-second), and at half the CPUs it is far above what the writes of a big cluster need.
CLUSTER_CPUS_PER_WRITER = 2
ROW_OVERHEAD_BYTES = 1024  # landmarks, bbox and strings of one face row, roughly
FILE_BYTES = 16 << 20
COUNTS_FOLDER = "counts"


@dataclass(frozen=True)
class Folder:
    """An output folder: the boolean column that selects its rows (None: every row), and its
    schema (None: every column but the flags, as they are)."""
    flag: str | None
    schema: pa.Schema | None


Folders = dict[str, Folder]
PREPROCESS_FOLDERS: Folders = {"faces": Folder("is_face", schema.FACES),
                               "manifest": Folder("is_manifest", schema.MANIFEST)}


def table_of(block: pa.Table, keep: np.ndarray, folder: Folder) -> pa.Table:
    """The kept rows of a block as a table of the folder's columns. The stages emit their rows
    in the output types already (schema.FACE_ROWS, schema.MIXED_ROWS, predict's rows), so this
    only selects; the cast is a no-op unless Ray widened a type (large strings, say)."""
    kept = block if keep.all() else block.filter(pa.array(keep, pa.bool_()))
    if folder.schema is None:
        return kept.drop_columns([name for name in kept.column_names if name.startswith("is_")])
    return kept.select(folder.schema.names).cast(folder.schema)


def small_columns(block: pa.Table) -> dict[str, np.ndarray]:
    """The block's scalar columns (labels, statuses, flags) as numpy, for counting."""
    return {f.name: block[f.name].to_numpy() for f in block.schema
            if not (pa.types.is_binary(f.type) or pa.types.is_nested(f.type))}


def preprocess_counts(rows: dict, keep: dict[str, np.ndarray]) -> dict:
    is_face, is_manifest = keep["faces"], keep["manifest"]
    return {
        "inputs": int(is_manifest.sum()),
        "faces": int(is_face.sum()),
        "status": Counter(rows["status"][is_manifest].tolist()),
        "faces_by_label": Counter(rows["label_name"][is_face].tolist()),
        "faces_by_split": Counter(rows["split"][is_face].tolist()),
        "inputs_by_split": Counter(rows["split"][is_manifest].tolist()),
    }


class ShardSink(_FileDatasink):
    """Parquet files of about 16 MiB each (or `rows_per_file` rows): few large files, not
    one per block, yet small enough that writing overlaps the stage before it, and that a
    killed run loses at most a file's worth of work per write task."""

    def __init__(self, run_uri: str, face_bytes: int, folders: Folders = PREPROCESS_FOLDERS,
                 count: Callable[[dict, dict], dict] = preprocess_counts, rows_per_file: int = 0,
                 retry: RetryConfig | None = None):
        fs, path = storage.resolve(run_uri)
        super().__init__(path, filesystem=fs, file_format="parquet")
        self.run_uri, self.folders, self.count, self.retry = run_uri, folders, count, retry
        self.rows_per_file = rows_per_file or max(256, FILE_BYTES // (face_bytes + ROW_OVERHEAD_BYTES))
        self.totals: dict = {}

    def write_dataset(self, ds: ray.data.Dataset, job: str, total: int | None, unit: str = "inputs") -> None:
        """Run `ds` to the end, writing it through this sink, while the user sees the run's
        progress (of `total` inputs); fills `totals` (this attempt's)."""
        with Progress(job, total, lambda: read_counts(self.run_uri, self.retry), unit):
            ds.write_datasink(self, ray_remote_args={"num_cpus": LIGHT_CPUS, "max_retries": SYSTEM_FAILURE_RETRIES},
                              concurrency=max(1, available_cpus() // CLUSTER_CPUS_PER_WRITER))

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return {}
        block = pa.concat_tables(tables)
        rows = small_columns(block)
        keep = {name: rows[folder.flag].astype(bool) if folder.flag else np.ones(block.num_rows, bool)
                for name, folder in self.folders.items()}
        # Ray's name for this task's files: the pending checkpoint of a rerun matches it
        base = self.filename_provider.get_filename_for_task(ctx.kwargs["write_uuid"], ctx.task_idx)
        base = base.removesuffix(".parquet")
        for name, folder in self.folders.items():
            self.write_table(table_of(block, keep[name], folder), f"{name}/{base}.parquet")
        counts = self.count(rows, keep)
        storage.write_bytes(storage.join(self.run_uri, COUNTS_FOLDER, f"{base}.json"),
                            json.dumps(counts).encode(), self.retry)
        return counts

    def write_table(self, table: pa.Table, name: str) -> None:
        fs, path = storage.resolve(storage.join(self.run_uri, name))

        def write() -> None:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pq.write_table(table, path, filesystem=fs, **schema.parquet_options(table))

        storage.retrying(f"write {storage.join(self.run_uri, name)}", write, self.retry)

    def on_write_complete(self, write_result) -> None:
        self.totals = merge_counts(write_result.write_returns)


def read_counts(run_uri: str, retry: RetryConfig | None = None) -> dict:
    """The counts of every task whose files are in the run (all attempts), added up."""
    counts = storage.join(run_uri, COUNTS_FOLDER)
    files = storage.list_files(counts, (".json",), retry) if storage.exists(counts, retry) else []
    return merge_counts([json.loads(storage.read_bytes(uri, retry)) for uri in files])


def merge_counts(parts: list[dict]) -> dict:
    """Numbers and counters (dicts of numbers, also as read back from JSON) add up; other
    dicts (e.g. {subject: reason}) are merged."""
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
                total[key] = total.get(key, Counter()) + Counter(value)
            elif isinstance(value, dict):
                total[key] = {**total.get(key, {}), **value}
            else:
                total[key] = total.get(key, 0) + value
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in total.items()}
