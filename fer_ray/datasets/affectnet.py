"""AffectNet (seed 004's layout): `<split>_set/images/<id>.jpg` and
`<split>_set/annotations/<id>_{exp,val,aro,lnd}.npy`. Labels are already canonical.

Four small annotation objects per image means over a million objects for the full
set: they are fetched inside Ray tasks, many requests in flight at once (FetchStage),
never one after another from the driver.
"""
from __future__ import annotations

import functools
import io
import posixpath

import numpy as np
import pyarrow as pa

from fer_ray import labels, schema, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import Lister, basename, input_row, listed_table
from fer_ray.face68 import N_VALUES
from fer_ray.schema import Status

SPLITS = {"train_set": "train", "val_set": "val"}


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> pa.Table:
    """One Arrow table of input rows: the full set is about a million images."""
    tables = [schema.rows_table([], schema.INPUT_ROWS)]
    for folder, split in SPLITS.items():
        images = storage.join(cfg.input, folder, "images")
        if storage.exists(images, cfg.retry):
            annotations = storage.join(cfg.input, folder, "annotations")
            tables.append(listed_table(lister(images), "affectnet", functools.partial(image_row, annotations, split)))
    return pa.concat_tables(tables)


def image_row(annotations: str, split: str, uri: str) -> dict:
    """An image's row; its annotation files are `<annotations>/<image stem>_*.npy`."""
    row = input_row(uri, "affectnet", split=split)
    row["sidecar"] = storage.join(annotations, basename(uri).rsplit(".", 1)[0])
    return row


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def annotate(row: dict, read) -> None:
    """Label, valence, arousal and landmarks from the image's annotation files."""
    try:
        exp = load_npy(read(row["sidecar"] + "_exp.npy"))
    except FileNotFoundError:
        row["status"] = Status.MISSING_ANNOTATION
        row["error"] = f"no {posixpath.basename(row['sidecar'])}_exp.npy beside the image"
        return
    try:
        label = int(str(exp))
    except ValueError:
        label = -2
    if not 0 <= label < len(labels.CANONICAL):
        row["status"], row["error"] = Status.BAD_LABEL, (
            f"_exp.npy holds {str(exp)[:20]!r}; expected an AffectNet class 0-7")
        return
    row["label"] = label
    row["valence"], row["arousal"] = (_optional_scalar(read, row["sidecar"] + s) for s in ("_val.npy", "_aro.npy"))
    row["hint_landmarks"] = _optional_landmarks(read, row["sidecar"] + "_lnd.npy")


def _optional_scalar(read, uri: str) -> float:
    try:
        return float(str(load_npy(read(uri))))
    except (FileNotFoundError, ValueError):
        return float("nan")


def _optional_landmarks(read, uri: str) -> np.ndarray:
    try:
        points = load_npy(read(uri)).astype(np.float32).reshape(-1)
    except (FileNotFoundError, ValueError):
        points = np.empty(0, np.float32)
    return points if points.size == N_VALUES else np.empty(0, np.float32)  # no hint
