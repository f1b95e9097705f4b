"""Preprocess a video dataset (a config.VIDEO_LAYOUTS layout): videos -> clips/, manifest/,
_summary.json and a contact sheet of film strips.

`preprocess.run` plans, leases and begins the run, then calls `make_run` for a video layout.
The driver lists names only (the layout's list_inputs, as for images); each video is one
input and goes whole to a ClipStage actor
(stages.clips): label, probe, frames nearest to `clip_length` evenly spaced times, faces,
tracking. Staged, resumable per video and committed exactly as the image preprocess
(pipelines.runs): the same checks, the same run id rules (the clip fields are part of the
config), one manifest row per listed name.
"""
from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import ray.data

from fer_ray import results, schema, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets import Inputs, RowsDatasource
from fer_ray.pipelines import runs
from fer_ray.pipelines.writer import Folder, ShardSink
from fer_ray.runtime import LIGHT_CPUS, actor_pool_size
from fer_ray.stages.base import apply_stage
from fer_ray.stages.clips import ClipStage
from fer_ray.vision.draw import encode_png, film_strips

FOLDERS = {"clips": Folder("is_clip", schema.CLIPS), "manifest": Folder("is_manifest", schema.MANIFEST)}
VIDEOS_PER_READ_TASK = 16
MAX_STRIPS = 16  # film strips on the contact sheet


def make_run(cfg: PreprocessConfig, inputs: Inputs, staged: runs.StagedRun) -> dict:
    """Write the clips of a begun run (pipelines.preprocess.run) and commit it; returns its summary."""
    face = cfg.face
    sink = ShardSink(staged.uri(), face_bytes=cfg.clip_length * face.size ** 2 * face.channels, folders=FOLDERS,
                     count=clip_counts, rows_per_file=cfg.rows_per_file, retry=cfg.retry)
    sink.write_dataset(runs.checkpointed(staged, clipped(cfg, inputs, staged), "source_uri"), "preprocess",
                       inputs.count, "videos")
    return commit(cfg, staged, inputs, sink.totals)


def clipped(cfg: PreprocessConfig, inputs: Inputs, staged: runs.StagedRun) -> ray.data.Dataset:
    """The listed videos -> one CLIP_ROWS row each, lazily."""
    ds = ray.data.read_datasource(RowsDatasource(inputs.rows, schema.INPUT_ROWS, VIDEOS_PER_READ_TASK),
                                  num_cpus=LIGHT_CPUS)
    workers = actor_pool_size(cfg.workers, cfg.num_gpus, staged.reserved_cpus)
    return apply_stage(ds, ClipStage, cfg, workers=workers, num_gpus=cfg.num_gpus)


def clip_counts(rows: dict, keep: dict) -> dict:
    is_clip, is_manifest = keep["clips"], keep["manifest"]
    return {"inputs": int(is_manifest.sum()), "clips": int(is_clip.sum()),
            "valid_frames": int(rows["n_valid"][is_clip].sum()),
            "repeated": int(rows["repeated"][is_clip].sum()),
            "status": Counter(rows["status"][is_manifest].tolist()),
            "clips_by_label": Counter(rows["label_name"][is_clip].tolist()),
            "clips_by_split": Counter(rows["split"][is_clip].tolist()),
            "inputs_by_split": Counter(rows["split"][is_manifest].tolist())}


def commit(cfg: PreprocessConfig, staged: runs.StagedRun, inputs: Inputs, attempt: dict) -> dict:
    totals = runs.finish_counts(staged, inputs.count)
    summary = make_summary(cfg, staged, totals, attempt)
    write_contact_sheet(cfg, staged)
    storage.write_bytes(staged.uri("_summary.json"), json.dumps(summary, indent=2).encode(), cfg.retry)
    runs.publish(staged, tuple(FOLDERS))
    return summary


def make_summary(cfg: PreprocessConfig, staged: runs.StagedRun, totals: dict, attempt: dict) -> dict:
    elapsed = time.time() - staged.started
    ran = attempt.get("inputs", 0)
    return {"layout": cfg.layout, "input": cfg.input, "output": cfg.output, "clip_length": cfg.clip_length,
            "inputs": 0, "clips": 0, "valid_frames": 0, "repeated": 0, **totals, **staged.report(),
            "units_run": ran, "elapsed_s": round(elapsed, 2),
            "clips_per_s": round(ran / elapsed, 2) if elapsed else 0.0,
            "clips_uri": staged.uri("clips"), "manifest_uri": staged.uri("manifest"),
            "contact_sheet_uri": staged.uri("contact_sheet.png")}


def write_contact_sheet(cfg: PreprocessConfig, staged: runs.StagedRun) -> None:
    """A PNG of the first clips as film strips, read back from the run."""
    wanted = min(MAX_STRIPS, cfg.contact_sheet_faces)
    clips, masks, captions = [], [], []
    for uri in runs.run_files(staged, "clips", absolute=True):
        table = results.arrow_dataset([uri]).to_table(columns=["frames", "frame_shape", "valid", "label_name",
                                                              "subject", "split"])
        for row in table.slice(0, wanted - len(clips)).to_pylist():
            clips.append(schema.clip_array(row["frames"], row["frame_shape"]))
            masks.append(np.asarray(row["valid"], bool))
            captions.append(f"{row['label_name'] or '?'} / {row['subject'] or '-'} / {row['split']}")
        if len(clips) >= wanted:
            break
    if clips:
        storage.write_bytes(staged.uri("contact_sheet.png"), encode_png(film_strips(clips, masks, captions)),
                            cfg.retry)
