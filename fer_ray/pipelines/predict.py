"""Predict: images (a folder or URI) -> faces found and aligned as in preprocessing -> class
probabilities per face, in one Parquet or CSV file (or Parquet shards for a directory output).

Every input image gets at least one row: images without a usable face keep their status
and error, with empty probabilities, so nothing silently disappears.
"""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import ray
import ray.data

from fer_ray import storage
from fer_ray.config import ConfigError, FaceConfig, PreprocessConfig, apply_dict
from fer_ray.datasets.common import IMAGE_EXTENSIONS, input_row
from fer_ray.runtime import start_ray
from fer_ray.schema import face_array
from fer_ray.stages.base import LIGHT_CPUS, apply_stage, available_cpus
from fer_ray.stages.face import FaceStage
from fer_ray.stages.fetch import FetchStage
from fer_ray.training.evaluate import check_checkpoint, classify

KEEP = ("source_uri", "face_index", "status", "error", "n_faces", "bbox", "det_score")


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
    keep = {key: batch[key] for key in KEEP}
    return {**keep, "has_face": np.asarray(batch["is_face"], bool),
            "image": np.ascontiguousarray(faces.transpose(0, 3, 1, 2)),
            "landmarks": np.stack(batch["landmarks"]).astype(np.float32).reshape(-1, 68, 2)}


def output_rows(batch: dict, class_names: tuple[str, ...]) -> dict:
    """Probabilities as one column per class (NaN where no face), the predicted label name."""
    has_face = batch.pop("has_face")
    probabilities = batch.pop("probabilities").astype(np.float32)
    probabilities[~has_face] = np.nan
    prediction = batch.pop("prediction")
    names = np.array(class_names, dtype=object)
    batch["label"] = np.where(has_face, names[prediction], "")
    batch["confidence"] = np.where(has_face, probabilities.max(axis=1, initial=0.0), np.nan)
    for i, name in enumerate(class_names):
        batch[f"p_{name}"] = probabilities[:, i]
    return batch


def run(checkpoint_uri: str, input_uri: str, output: str, detector: str = "", workers: int = 0) -> dict:
    path, state = check_checkpoint(checkpoint_uri)
    cfg = preprocess_config(state, input_uri, detector)
    FaceStage.check_weights(cfg)
    files = storage.list_files(input_uri, IMAGE_EXTENSIONS) if not input_uri.lower().endswith(
        IMAGE_EXTENSIONS) else [input_uri]
    if not files:
        raise ConfigError(f"input: no images ({', '.join(IMAGE_EXTENSIONS)}) under {input_uri}")
    start_ray()
    started = time.time()
    ds = apply_stage(ray.data.from_items([input_row(uri, "predict") for uri in files]), FetchStage, cfg)
    # Face finding is the expensive part; a small classifier needs one actor. The pools leave
    # a CPU for Ray Data's own whole-CPU tasks (file listing), or they would starve them.
    ds = apply_stage(ds, FaceStage, cfg, workers=workers or max(1, available_cpus() - 1))
    ds = ds.filter(lambda row: row["is_face"] or row["is_manifest"], num_cpus=LIGHT_CPUS)
    ds = ds.map_batches(model_inputs, batch_format="numpy", num_cpus=LIGHT_CPUS)
    ds = classify(ds, path, workers=1)
    ds = ds.map_batches(output_rows, fn_args=(tuple(state["class_names"]),), batch_format="numpy",
                        num_cpus=LIGHT_CPUS)
    rows = write(ds, output)
    return {"inputs": len(files), "rows": rows, "output": output, "elapsed_s": round(time.time() - started, 2)}


def write(ds: ray.data.Dataset, output: str) -> int:
    """Stream batches into one .parquet/.csv file (the driver holds one batch at a time),
    or Parquet shards when the output is a directory."""
    if not output.lower().endswith((".parquet", ".csv")):
        ds.write_parquet(output, filesystem=storage.resolve(output)[0])
        return ds.count()
    fs, path = storage.resolve(output)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    rows, writer = 0, None
    with fs.open_output_stream(path) as stream:
        for batch in ds.iter_batches(batch_format="pyarrow"):
            table = _plain(batch)
            if writer is not None:
                table = table.cast(writer.schema)  # later batches may infer e.g. large_string
            if writer is None:
                writer = (pq.ParquetWriter(stream, table.schema) if path.endswith(".parquet")
                          else pacsv.CSVWriter(stream, table.schema))
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
    return rows


def _plain(table: pa.Table) -> pa.Table:
    """Ray's tensor columns -> plain lists; CSV cannot hold lists, so bbox becomes 4 columns."""
    bbox = np.asarray(table.column("bbox").to_pylist(), np.float32).reshape(-1, 4)
    table = table.drop_columns(["bbox"])
    for i, name in enumerate(("x0", "y0", "x1", "y1")):
        table = table.append_column(f"bbox_{name}", pa.array(bbox[:, i]))
    return table
