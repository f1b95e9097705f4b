"""ShardSink: writes each task's rows as one Parquet file per output folder.

A stage's output batch carries the rows of several folders at once (faces and their
manifest rows; fused faces and theirs); a boolean column per folder (`is_face`,
`is_manifest`, `is_mixed`) says which rows go where. File names come from the write
task's index, and the pipelines clear their folders before a run, so rerunning into the
same output replaces, never duplicates. Each task returns small counts; the driver adds
them up into the summary.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from ray.data import Datasink
from ray.data.block import BlockAccessor

from fer_ray import schema, storage
from fer_ray.schema import arrow_array
from fer_ray.stages.base import LIGHT_CPUS, available_cpus

# Logical CPUs per concurrent write task. Writes are short; capping them lets Ray reuse a
# warm worker process rather than start one (importing Ray Data, ~1 core-second) per
# file, which on a 2-core node took ~5% of the machine (bench/preprocess.py); at half the
# CPUs the cap is far above what a big cluster's writes need.
CPUS_PER_WRITE = 2
ROW_OVERHEAD_BYTES = 1024  # landmarks, bbox and strings of one face row, roughly
Folders = dict[str, tuple[str, pa.Schema]]  # folder -> (flag column, schema)
PREPROCESS_FOLDERS: Folders = {"faces": ("is_face", schema.FACES), "manifest": ("is_manifest", schema.MANIFEST)}


def table_of(block: pa.Table, keep: np.ndarray, table_schema: pa.Schema) -> pa.Table:
    """The kept rows of a block as a plain-Arrow table of `table_schema`.

    Columns that already have the schema's type pass through untouched (the face stage
    emits them so); the others, e.g. Ray's tensor columns made from a stage's numpy
    vectors, are converted.
    """
    kept = block if keep.all() else block.filter(pa.array(keep, pa.bool_()))  # all: one face per input
    typed = {field.name for field in table_schema if kept.schema.field(field.name).type == field.type}
    other = [name for name in table_schema.names if name not in typed]
    arrays = BlockAccessor.for_block(kept.select(other)).to_numpy() if other else {}
    columns = {field.name: kept.column(field.name) if field.name in typed
               else arrow_array(arrays[field.name], field.type) for field in table_schema}
    return pa.table(columns, schema=table_schema)


def small_columns(block: pa.Table) -> dict[str, np.ndarray]:
    """The block's scalar columns (labels, statuses, ...) as numpy, for counting."""
    names = [field.name for field in block.schema
             if not (pa.types.is_binary(field.type) or pa.types.is_nested(field.type)
                     or isinstance(field.type, pa.ExtensionType))]
    return BlockAccessor.for_block(block.select(names)).to_numpy()


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


class ShardSink(Datasink):
    """Parquet files of about `file_bytes` each: few large files, not one per block, yet
    small enough that writing overlaps the stage before it instead of trailing it."""

    def __init__(self, output_uri: str, face_bytes: int, folders: Folders = PREPROCESS_FOLDERS,
                 count: Callable[[dict, dict], dict] = preprocess_counts, file_bytes: int = 16 << 20):
        self.output_uri = output_uri
        self.folders, self.count = folders, count
        self.rows_per_file = max(256, file_bytes // (face_bytes + ROW_OVERHEAD_BYTES))
        self.totals: dict = {}

    def write_dataset(self, ds: ray.data.Dataset) -> None:
        """Run `ds` to the end, writing it through this sink; fills `totals`."""
        ds.write_datasink(self, ray_remote_args={"num_cpus": LIGHT_CPUS},
                          concurrency=max(1, available_cpus() // CPUS_PER_WRITE))

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return {}
        block = pa.concat_tables(tables)
        rows = small_columns(block)
        keep = {folder: rows[flag].astype(bool) for folder, (flag, _) in self.folders.items()}
        name = f"part-{ctx.task_idx:05d}.parquet"
        for folder, (_, table_schema) in self.folders.items():
            self.write_table(table_of(block, keep[folder], table_schema), folder, name)
        return self.count(rows, keep)

    def write_table(self, table: pa.Table, folder: str, name: str) -> None:
        fs, path = storage.resolve(storage.join(self.output_uri, folder))
        fs.create_dir(path, recursive=True)
        pq.write_table(table, f"{path}/{name}", filesystem=fs, compression="zstd")

    def on_write_complete(self, write_result) -> None:
        self.totals = merge_counts(write_result.write_returns)


def merge_counts(parts: list[dict]) -> dict:
    """Numbers and Counters add up; plain dicts (e.g. {subject: reason}) are merged."""
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, Counter):
                total[key] = total.get(key, Counter()) + value
            elif isinstance(value, dict):
                total[key] = {**total.get(key, {}), **value}
            else:
                total[key] = total.get(key, 0) + value
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in total.items()}
