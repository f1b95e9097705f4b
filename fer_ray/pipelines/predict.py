"""Predict: images (a folder or URI) -> faces found and aligned as in preprocessing -> class
probabilities per face, in one Parquet or CSV file (or Parquet shards for a directory output).

Every input image gets at least one row: images without a usable face keep their status
and error, with empty probabilities, so nothing silently disappears.
"""
from __future__ import annotations

import json
import posixpath
import time
import uuid
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray.data
import yaml

from fer_ray import config, datasets, storage
from fer_ray.config import ConfigError, FaceConfig, PreprocessConfig, apply_dict
from fer_ray.datasets import Inputs
from fer_ray.datasets.common import IMAGE_EXTENSIONS, Lister, input_row, listed_rows
from fer_ray.pipelines import runs
from fer_ray.pipelines.writer import Folder, ShardSink, merge_counts
from fer_ray.runtime import start_ray
from fer_ray.schema import face_array
from fer_ray.stages.base import LIGHT_CPUS, apply_stage, available_cpus
from fer_ray.stages.classify import classify
from fer_ray.stages.face import FaceStage
from fer_ray.training.evaluate import check_checkpoint

KEEP = ("source_uri", "face_index", "status", "error", "n_faces", "bbox", "det_score")
FILE_FORMATS = (".parquet", ".csv")


def face_config(state: dict, detector: str = "") -> FaceConfig:
    """The face settings the training data was made with, so predictions see the same crops."""
    face = FaceConfig()
    apply_dict(face, state.get("face", {}))
    if detector:
        face.detector = detector
    return face


def preprocess_config(state: dict, input_uri: str, detector: str) -> PreprocessConfig:
    cfg = PreprocessConfig(layout="folder", input=input_uri, output="-", face=face_config(state, detector))
    cfg.validate()
    spec = state["spec"]
    if spec["input_size"] and (cfg.face.size, 3 if cfg.face.color == "rgb" else 1) != (spec["input_size"], spec["channels"]):
        raise ConfigError(f"checkpoint: its faces are {cfg.face.size}px {cfg.face.color}, but "
                          f"{state['model_name']} expects {spec['input_size']}px x{spec['channels']}")
    return cfg


def model_inputs(batch: dict) -> dict:
    """FaceStage rows -> the classify stage's arrays; rows without a face carry a blank crop."""
    faces = np.stack([face_array(face, shape) for face, shape in zip(batch["face"], batch["face_shape"])])
    faces = faces[..., None] if faces.ndim == 3 else faces
    keep = {key: batch[key] for key in (*KEEP, "is_manifest")}
    return {**keep, "has_face": np.asarray(batch["is_face"], bool),
            "image": np.ascontiguousarray(faces.transpose(0, 3, 1, 2)),
            "landmarks": np.stack(batch["landmarks"]).astype(np.float32).reshape(-1, 68, 2)}


def output_rows(batch: dict, class_names: tuple[str, ...]) -> pa.Table:
    """One plain-Arrow row per face (or per input without one): probabilities as one column
    per class (NaN where no face), the predicted label name, the box as four columns (CSV
    holds no lists). `is_manifest` marks the one row of each input that counts it."""
    has_face = np.asarray(batch.pop("has_face"), bool)
    probabilities = np.array(batch.pop("probabilities"), np.float32)  # a copy: batches are read-only
    probabilities[~has_face] = np.nan
    names = np.array(class_names, dtype=object)
    columns = {key: batch[key] for key in KEEP if key != "bbox"}
    columns["label"] = np.where(has_face, names[batch.pop("prediction")], "")
    columns["confidence"] = np.where(has_face, probabilities.max(axis=1, initial=0.0), np.nan)
    columns.update({f"p_{name}": probabilities[:, i] for i, name in enumerate(class_names)})
    bbox = np.asarray(batch["bbox"], np.float32).reshape(-1, 4)
    columns.update({f"bbox_{name}": bbox[:, i] for i, name in enumerate(("x0", "y0", "x1", "y1"))})
    columns["is_manifest"] = np.asarray(batch["is_manifest"], bool)
    return pa.table({name: pa.array(list(v) if v.dtype == object else v) for name, v in columns.items()})


def predict_counts(rows: dict, keep: dict) -> dict:
    inputs = rows["is_manifest"].astype(bool)
    return {"inputs": int(inputs.sum()), "rows": len(inputs), "status": Counter(rows["status"][inputs].tolist())}


def list_images(input_uri: str) -> Inputs:
    """Every listed name under the input (or the one image given) as an input row."""
    if input_uri.lower().endswith(IMAGE_EXTENSIONS) and not storage.exists(storage.join(input_uri, "")):
        return Inputs([input_row(input_uri, "predict")], 1, storage.file_fingerprint(input_uri))
    lister = Lister()
    rows = listed_rows(lister(input_uri), "predict", lambda uri: input_row(uri, "predict"))
    if not rows:
        raise ConfigError(f"input: no files under {input_uri}")
    return Inputs(rows, len(rows), lister.fingerprint())


def check(checkpoint_uri: str, input_uri: str, output: str, detector: str) -> tuple[str, dict, PreprocessConfig, Inputs]:
    """Checkpoint, face settings, weights, input and output, before any Ray work."""
    path, state = check_checkpoint(checkpoint_uri)
    cfg = preprocess_config(state, input_uri, detector)
    FaceStage.check_weights(cfg)
    problem = storage.check_readable(input_uri)
    if problem:
        raise ConfigError(f"input: {problem}")
    runs.check_output(input_uri, output, is_file=output.lower().endswith(FILE_FORMATS))
    return path, state, cfg, list_images(input_uri)


def run(checkpoint_uri: str, input_uri: str, output: str, detector: str = "", workers: int = 0,
        restart: bool = False) -> dict:
    path, state, cfg, inputs = check(checkpoint_uri, input_uri, output, detector)
    if output.lower().endswith(FILE_FORMATS):
        start_ray()
        started = time.time()
        counts = write_file(predictions(cfg, inputs, path, state, workers), output)
        return {**counts, "output": output, "elapsed_s": round(time.time() - started, 2)}
    settings = {"checkpoint": path, "checkpoint_version": storage.file_fingerprint(path),
                "face": config.to_dict(cfg.face)}
    staged = runs.plan("predict", output, settings, inputs.fingerprint, restart)
    if staged.up_to_date:
        return runs.committed_summary(staged)
    start_ray()
    runs.begin(staged, yaml.safe_dump({"checkpoint": path, "input": input_uri, "face": settings["face"]}))
    sink = ShardSink(staged.uri(), face_bytes=0, folders={"predictions": Folder(None, None)}, count=predict_counts)
    rows = predictions(cfg, inputs, path, state, workers, staged.reserved_cpus)
    sink.write_dataset(runs.checkpointed(staged, rows, "source_uri"))
    summary = {**runs.finish_counts(staged, inputs.count), **staged.report(), "output": output,
               "predictions_uri": staged.uri("predictions"), "elapsed_s": round(time.time() - staged.started, 2)}
    storage.write_bytes(staged.uri("_summary.json"), json.dumps(summary, indent=2).encode())
    runs.publish(staged, ("predictions",))
    return summary


def predictions(cfg: PreprocessConfig, inputs: Inputs, path: str, state: dict, workers: int,
                reserved_cpus: int = 0) -> ray.data.Dataset:
    """The whole pipeline, lazily: fetch, find faces, classify, one output row per face."""
    ds = datasets.read(cfg, inputs)
    # Face finding is the expensive part: a face actor per CPU (but those Ray's own operators
    # hold), and one classifier actor, light beside them (one forward pass per batch of crops).
    ds = apply_stage(ds, FaceStage, cfg, workers=workers or max(1, available_cpus() - reserved_cpus))
    ds = ds.filter(lambda row: row["is_face"] or row["is_manifest"], num_cpus=LIGHT_CPUS)
    ds = ds.map_batches(model_inputs, batch_format="numpy", num_cpus=LIGHT_CPUS)
    ds = classify(ds, path, workers=1, num_cpus=LIGHT_CPUS)
    return ds.map_batches(output_rows, fn_args=(tuple(state["class_names"]),), batch_format="numpy",
                          num_cpus=LIGHT_CPUS)


def write_file(ds: ray.data.Dataset, output: str) -> dict:
    """Stream the rows into one .parquet/.csv file (the driver holds one batch at a time),
    written beside the target and moved over it at the end, so a failed run leaves the
    previous file whole. Returns the counts of what was written."""
    fs, path = storage.resolve(output)
    staging = f"{output}.tmp-{uuid.uuid4().hex[:8]}"
    fs.create_dir(posixpath.dirname(path), recursive=True)
    parts, writer = [], None
    try:
        with fs.open_output_stream(storage.resolve(staging)[1]) as stream:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                table = batch.drop_columns(["is_manifest"])
                table = table if writer is None else table.cast(writer.schema)  # e.g. large_string later
                writer = writer or (pq.ParquetWriter(stream, table.schema) if path.endswith(".parquet")
                                    else pacsv.CSVWriter(stream, table.schema))
                writer.write_table(table)
                parts.append(predict_counts({name: batch.column(name).to_numpy(zero_copy_only=False)
                                             for name in ("is_manifest", "status")}, {}))
            if writer is not None:
                writer.close()
        storage.replace_file(staging, output)
    finally:
        storage.remove_dir(staging)
    return merge_counts(parts)
