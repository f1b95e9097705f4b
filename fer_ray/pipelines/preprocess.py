"""Preprocess: raw dataset -> aligned faces with landmarks, a manifest, a summary, a contact sheet."""
from __future__ import annotations

import json
import time

import pyarrow.parquet as pq

from fer_ray import config, datasets, storage
from fer_ray.config import ConfigError, PreprocessConfig
from fer_ray.pipelines.writer import ShardSink
from fer_ray.runtime import cluster_capacity, start_ray
from fer_ray.schema import face_array, landmarks_array
from fer_ray.stages.base import apply_stage
from fer_ray.stages.face import FaceStage
from fer_ray.vision.draw import contact_sheet, encode_png


def check(cfg: PreprocessConfig) -> None:
    """Everything that can be known wrong before any Ray work: values, input, weights."""
    cfg.validate()
    problem = storage.check_readable(cfg.input)
    if problem:
        raise ConfigError(f"input: {problem}")
    if cfg.layout == "fer2013":
        from fer_ray.datasets.fer2013 import check_header

        try:
            check_header(cfg.input)
        except (ValueError, IsADirectoryError, OSError) as err:
            raise ConfigError(str(err)) from None
    FaceStage.check_weights(cfg)


def run(cfg: PreprocessConfig) -> dict:
    """Run the whole job; returns the summary (also written to `_summary.json`)."""
    check(cfg)
    start_ray()
    FaceStage.check_cluster(cfg, cluster_capacity())
    started = time.time()
    clear_outputs(cfg.output)
    storage.write_bytes(storage.join(cfg.output, "config.yaml"), config.to_yaml(cfg).encode())
    channels = 3 if cfg.face.color == "rgb" else 1
    sink = ShardSink(cfg.output, face_bytes=cfg.face.size ** 2 * channels)
    faces = apply_stage(datasets.read(cfg), FaceStage, cfg, workers=cfg.workers, batch_size=cfg.batch_size,
                        num_gpus=cfg.num_gpus)
    sink.write_dataset(faces)
    summary = make_summary(cfg, sink.totals, time.time() - started)
    storage.write_bytes(storage.join(cfg.output, "_summary.json"), json.dumps(summary, indent=2).encode())
    write_contact_sheet(cfg)
    return summary


def clear_outputs(output: str) -> None:
    for folder in ("faces", "manifest"):
        storage.remove_dir(storage.join(output, folder))


def make_summary(cfg: PreprocessConfig, totals: dict, elapsed: float) -> dict:
    return {
        "layout": cfg.layout, "input": cfg.input, "output": cfg.output,
        "inputs": 0, "faces": 0, **totals,
        "elapsed_s": round(elapsed, 2),
        "images_per_s": round(totals.get("inputs", 0) / elapsed, 2) if elapsed else 0.0,
        "faces_uri": storage.join(cfg.output, "faces"),
        "manifest_uri": storage.join(cfg.output, "manifest"),
        "contact_sheet_uri": storage.join(cfg.output, "contact_sheet.png"),
    }


def write_contact_sheet(cfg: PreprocessConfig) -> None:
    """A PNG grid of the first aligned faces with their landmarks, read back from the output."""
    fs, path = storage.resolve(storage.join(cfg.output, "faces"))
    faces, points, captions = [], [], []
    for info in sorted(fs.get_file_info(pq_selector(path)), key=lambda i: i.path):
        table = pq.read_table(info.path, filesystem=fs,
                              columns=["face", "face_shape", "landmarks", "label_name", "split"])
        for row in table.slice(0, cfg.contact_sheet_faces - len(faces)).to_pylist():
            faces.append(face_array(row["face"], row["face_shape"]))
            points.append(landmarks_array(row["landmarks"]))
            captions.append(f"{row['label_name'] or '?'} {row['split']}")
        if len(faces) >= cfg.contact_sheet_faces:
            break
    if faces:
        sheet = contact_sheet(faces, points, captions)
        storage.write_bytes(storage.join(cfg.output, "contact_sheet.png"), encode_png(sheet))


def pq_selector(path: str):
    from pyarrow.fs import FileSelector

    return FileSelector(path, recursive=False)
