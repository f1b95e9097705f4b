"""Preprocess: raw dataset -> aligned faces with landmarks, a manifest, a summary, a contact sheet.

Staged and committed as pipelines.runs describes: everything knowable is checked before
Ray starts, the run writes under its own prefix, and `_commit.json` publishes it once every
input has its manifest row. A rerun of an interrupted run skips the inputs already written.
"""
from __future__ import annotations

import json
import time

from fer_ray import config, results, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets import Inputs
from fer_ray.pipelines import clips, runs
from fer_ray.pipelines.inputs import check, read_inputs
from fer_ray.pipelines.writer import ShardSink
from fer_ray.runtime import actor_pool_size, cluster_capacity, start_ray
from fer_ray.schema import face_array, landmarks_array
from fer_ray.stages.base import apply_stage
from fer_ray.stages.face import FaceStage
from fer_ray.vision.draw import contact_sheet, encode_png

FOLDERS = ("faces", "manifest")


def run(cfg: PreprocessConfig) -> dict:
    """Run the whole job; returns the summary (also written to the run's `_summary.json`).
    A video layout's run is made by pipelines.clips (clips/ instead of faces/)."""
    inputs = check(cfg)
    with runs.holding("preprocess", cfg, inputs.fingerprint) as staged:
        if staged.up_to_date:
            return runs.committed_summary(staged)
        start_ray()
        FaceStage.check_cluster(cfg, cluster_capacity())
        runs.begin(staged, config.to_yaml(cfg))
        make = clips.make_run if cfg.layout in config.VIDEO_LAYOUTS else make_run
        return make(cfg, inputs, staged)


def make_run(cfg: PreprocessConfig, inputs: Inputs, staged: runs.StagedRun) -> dict:
    """Write the faces of a begun run and commit it; returns its summary."""
    sink = ShardSink(staged.uri(), face_bytes=cfg.face.size ** 2 * cfg.face.channels,
                     rows_per_file=cfg.rows_per_file, retry=cfg.retry)
    workers = actor_pool_size(cfg.workers, cfg.num_gpus, staged.reserved_cpus)
    faces = apply_stage(read_inputs(cfg, inputs), FaceStage, cfg, workers=workers, batch_size=cfg.batch_size,
                        num_gpus=cfg.num_gpus)
    sink.write_dataset(runs.checkpointed(staged, faces, "source_uri"), "preprocess", inputs.count, "images")
    return commit(cfg, staged, inputs, sink.totals)


def commit(cfg: PreprocessConfig, staged: runs.StagedRun, inputs: Inputs, attempt: dict) -> dict:
    """Summary and contact sheet into the run, then publish it (if every input is there)."""
    totals = runs.finish_counts(staged, inputs.count)
    summary = make_summary(cfg, staged, totals, attempt)
    write_contact_sheet(cfg, staged)
    storage.write_bytes(staged.uri("_summary.json"), json.dumps(summary, indent=2).encode(), cfg.retry)
    runs.publish(staged, FOLDERS)
    return summary


def make_summary(cfg: PreprocessConfig, staged: runs.StagedRun, totals: dict, attempt: dict) -> dict:
    elapsed = time.time() - staged.started
    ran = attempt.get("inputs", 0)
    return {
        "layout": cfg.layout, "input": cfg.input, "output": cfg.output,
        "inputs": 0, "faces": 0, **totals, **staged.report(), "units_run": ran,
        "elapsed_s": round(elapsed, 2),
        "images_per_s": round(ran / elapsed, 2) if elapsed else 0.0,
        "faces_uri": staged.uri("faces"),
        "manifest_uri": staged.uri("manifest"),
        "contact_sheet_uri": staged.uri("contact_sheet.png"),
    }


def write_contact_sheet(cfg: PreprocessConfig, staged: runs.StagedRun) -> None:
    """A PNG grid of the first aligned faces with their landmarks, read back from the run."""
    faces, points, captions = [], [], []
    for uri in runs.run_files(staged, "faces", absolute=True):
        table = results.arrow_dataset([uri]).to_table(columns=["face", "face_shape", "landmarks", "label_name",
                                                              "split"])
        for row in table.slice(0, cfg.contact_sheet_faces - len(faces)).to_pylist():
            faces.append(face_array(row["face"], row["face_shape"]))
            points.append(landmarks_array(row["landmarks"]))
            captions.append(f"{row['label_name'] or '?'} {row['split']}")
        if len(faces) >= cfg.contact_sheet_faces:
            break
    if faces:
        sheet = contact_sheet(faces, points, captions)
        storage.write_bytes(staged.uri("contact_sheet.png"), encode_png(sheet), cfg.retry)
