"""Synthesis work units: which faces each fusing task reads, planned from small columns only.

A fused face needs every face of its subject in one place. Grouping whole face rows with a
shuffle moves every pixel through the object store, and on an input of one or two files it
makes one group block that a single task fuses while the other cores wait. Instead, a
planning task reads only the `subject` column of every faces/ file and cuts the subjects
into units: a unit is a list of (file, row positions) covering whole subjects, and each
fusing task reads its unit's rows straight from the committed Parquet files.

Units follow the order in which subjects first appear in the files. Preprocessing writes
faces in listing order, so a subject's faces sit together and a unit reads one or two
files; an input in any other order is still fused correctly, only with more reading.
Faces without a subject (they are only reported) form units of their own that read no
pixels.

The plan is written once per run, beside the run's checkpoint (`<output>/_checkpoints/`,
removed when the run is published), and a resumed run reuses it: the unit ids that Ray's
row checkpoint recorded must name the same faces in every attempt.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fer_ray import results, schema, storage
from fer_ray.config import RetryConfig

UNIT_SCHEMA = pa.schema([("unit", pa.string()), ("files", pa.list_(pa.string())),
                         ("rows", pa.list_(pa.list_(pa.int32()))), ("pixels", pa.bool_())])
UNITS_PER_CPU = 4  # a few units per core, so a slow unit does not leave the other cores idle
UNIT_FACE_BYTES = 64 << 20  # face pixels one task holds at most (a unit of a huge subject may exceed it)
DONE_FILE = "_plan.json"
PLAN_SUFFIX = "-plan"


def plan_uri(output: str, run_id: str) -> str:
    return storage.join(output, results.CHECKPOINTS_DIR, run_id + PLAN_SUFFIX)


def unit_size(faces: int, face_bytes: int, cpus: int) -> int:
    """Faces per unit: enough units for every core a few times over, none above the byte cap."""
    by_cores = math.ceil(faces / max(1, cpus * UNITS_PER_CPU))
    by_bytes = max(1, UNIT_FACE_BYTES // max(1, face_bytes))
    return max(1, min(by_cores, by_bytes))


def plan_units(subjects_per_file: list[np.ndarray], size: int) -> list[dict]:
    """Units of about `size` faces over the files' subject columns (one array of strings per
    file, in file order): whole subjects, in order of first appearance; nameless faces in
    their own pixel-free units. Pure: the same input gives the same units."""
    file_index = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(subjects_per_file)]
                                or [np.zeros(0, np.int32)])
    row_index = np.concatenate([np.arange(len(s), dtype=np.int32) for s in subjects_per_file]
                               or [np.zeros(0, np.int32)])
    subjects = np.concatenate([np.asarray(s, dtype=object) for s in subjects_per_file]
                              or [np.zeros(0, object)]).astype(str)
    names, first, codes = np.unique(subjects, return_index=True, return_inverse=True)
    order = np.argsort(codes, kind="stable")  # positions grouped by subject, in file order within each
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    units, current, pending = [], [], 0
    for code in np.argsort(first, kind="stable"):
        positions = order[bounds[code]:bounds[code + 1]]
        if names[code] == "":
            units += [_unit(file_index[chunk], row_index[chunk], pixels=False)
                      for chunk in np.array_split(positions, math.ceil(len(positions) / size))]
            continue
        current.append(positions)
        pending += len(positions)
        if pending >= size:
            units.append(_unit(file_index[np.concatenate(current)], row_index[np.concatenate(current)], True))
            current, pending = [], 0
    if current:
        units.append(_unit(file_index[np.concatenate(current)], row_index[np.concatenate(current)], True))
    for number, unit in enumerate(units):
        unit["unit"] = f"unit-{number:06d}"
    return units


def _unit(files: np.ndarray, rows: np.ndarray, pixels: bool) -> dict:
    """{"files": file numbers, "rows": row positions per file} of the given positions."""
    used = sorted(set(files.tolist()))
    return {"files": used, "rows": [np.sort(rows[files == f]).tolist() for f in used], "pixels": pixels}


def write_plan(face_files: list[str], face_bytes: int, cpus: int, plan: str, retry: RetryConfig) -> list[str]:
    """Plan the units of `face_files` and write one Parquet file per unit under `plan`;
    returns their URIs. A plan already complete there (a resumed run's) is kept as it is."""
    done = storage.join(plan, DONE_FILE)
    if storage.exists(done, retry):
        return json.loads(storage.read_bytes(done, retry))["files"]
    subjects = [_read_subjects(uri, retry) for uri in face_files]
    units = plan_units(subjects, unit_size(sum(map(len, subjects)), face_bytes, cpus))
    uris = [storage.join(plan, f"{unit['unit']}.parquet") for unit in units]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda pair: _write_unit(face_files, *pair, retry), zip(units, uris)))
    storage.write_bytes(done, json.dumps({"files": uris}).encode(), retry)
    return uris


def _read_subjects(uri: str, retry: RetryConfig) -> np.ndarray:
    fs, path = storage.resolve(uri)
    table = storage.retrying(f"read {uri}", lambda: pq.read_table(path, filesystem=fs, columns=["subject"]), retry)
    return table["subject"].to_numpy(zero_copy_only=False)


def _write_unit(face_files: list[str], unit: dict, uri: str, retry: RetryConfig) -> None:
    row = {**unit, "files": [face_files[i] for i in unit["files"]]}
    table = pa.Table.from_pylist([row], UNIT_SCHEMA)
    fs, path = storage.resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    options = schema.parquet_options(table)
    storage.retrying(f"write {uri}", lambda: pq.write_table(table, path, filesystem=fs, **options), retry)
