"""FacesSink: writes each task's rows as one `faces/` and one `manifest/` Parquet file.

File names come from the write task's index, and the pipeline clears `faces/` and
`manifest/` before a run, so rerunning into the same output replaces, never duplicates.
Each task returns small counts; the driver adds them up into the summary.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor

from fer_ray import schema, storage

ROW_OVERHEAD_BYTES = 1024  # landmarks, bbox and strings of one face row, roughly


def faces_table(rows: dict, keep: np.ndarray) -> pa.Table:
    """The `faces/` rows of a batch as a plain-Arrow table."""
    face = rows["face"][keep]
    columns = {name: rows[name][keep] for name in schema.FACES.names
               if name not in ("face", "face_shape", "bbox", "landmarks")}
    columns["face"] = [f.tobytes() for f in face]
    columns["face_shape"] = [list(face.shape[1:])] * len(face)
    columns["bbox"] = list(rows["bbox"][keep])
    columns["landmarks"] = list(rows["landmarks"][keep])
    return pa.table({name: _array(columns[name], schema.FACES.field(name).type) for name in schema.FACES.names},
                    schema=schema.FACES)


def manifest_table(rows: dict, keep: np.ndarray) -> pa.Table:
    return pa.table({name: _array(rows[name][keep], schema.MANIFEST.field(name).type)
                     for name in schema.MANIFEST.names}, schema=schema.MANIFEST)


def _array(values, kind: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(kind):
        flat = np.asarray(list(values), dtype=kind.value_type.to_pandas_dtype()).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, kind.value_type), kind.list_size)
    return pa.array(list(values) if isinstance(values, np.ndarray) and values.dtype == object else values, kind)


def counts(rows: dict, is_face: np.ndarray, is_manifest: np.ndarray) -> dict:
    return {
        "inputs": int(is_manifest.sum()),
        "faces": int(is_face.sum()),
        "status": Counter(rows["status"][is_manifest].tolist()),
        "faces_by_label": Counter(rows["label_name"][is_face].tolist()),
        "faces_by_split": Counter(rows["split"][is_face].tolist()),
        "inputs_by_split": Counter(rows["split"][is_manifest].tolist()),
    }


class FacesSink(Datasink):
    """Parquet files of about `file_bytes` each: few large files, not one per block, yet
    small enough that writing overlaps the face stage instead of trailing it."""

    def __init__(self, output_uri: str, face_bytes: int, file_bytes: int = 16 << 20):
        self.output_uri = output_uri
        self.rows_per_file = max(256, file_bytes // (face_bytes + ROW_OVERHEAD_BYTES))
        self.totals: dict = {}

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return counts({"status": np.array([]), "label_name": np.array([]), "split": np.array([])},
                          np.zeros(0, bool), np.zeros(0, bool))
        rows = BlockAccessor.for_block(pa.concat_tables(tables)).to_numpy()
        is_face, is_manifest = rows["is_face"].astype(bool), rows["is_manifest"].astype(bool)
        name = f"part-{ctx.task_idx:05d}.parquet"
        self.write_table(faces_table(rows, is_face), "faces", name)
        self.write_table(manifest_table(rows, is_manifest), "manifest", name)
        return counts(rows, is_face, is_manifest)

    def write_table(self, table: pa.Table, folder: str, name: str) -> None:
        fs, path = storage.resolve(storage.join(self.output_uri, folder))
        fs.create_dir(path, recursive=True)
        pq.write_table(table, f"{path}/{name}", filesystem=fs, compression="zstd")

    def on_write_complete(self, write_result) -> None:
        self.totals = merge_counts(write_result.write_returns)


def merge_counts(parts: list[dict]) -> dict:
    total = {"inputs": 0, "faces": 0}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, Counter()) + value if isinstance(value, Counter) else total[key] + value
    return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in total.items()}
