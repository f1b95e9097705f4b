"""Label videos: a folder or prefix of videos -> who is on screen when, with which expression.

The driver lists names only. Probing and segment planning run in Ray tasks; each time
segment is decoded, searched for faces and tracked by a segment actor (detector and
landmarks loaded once); the classifier actor adds probabilities and the crops are dropped
(but one small thumbnail per track and segment); a per-video reduce (a Ray Data groupby on
small rows) joins tracks across segment borders, smooths, summarises, cuts label runs and
writes the video's WebVTT file and timeline PNG, and for the first `annotate` videos of the
listing an annotated MP4. Every listed name gets exactly one videos/ row. Runs are staged,
resumable per video and committed as the other jobs' (pipelines.runs).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import ray.data
from ray.data._internal.logical.interfaces import LogicalPlan

from fer_ray import config, results, schema, storage
from fer_ray.config import VIDEO_EXTENSIONS, ConfigError, LabelVideosConfig, PreprocessConfig
from fer_ray.datasets import RowsDatasource
from fer_ray.datasets.common import Lister
from fer_ray.models import checkpoint as ckpt
from fer_ray.pipelines import runs
from fer_ray.pipelines.predict import preprocess_config
from fer_ray.pipelines.writer import Folder, ShardSink
from fer_ray.runtime import LIGHT_CPUS, actor_pool_size, check_classifier_gpu, cluster_capacity, start_ray
from fer_ray.schema import Status, VideoStatus
from fer_ray.stages.base import apply_group_stage, apply_stage, sort_shuffle
from fer_ray.stages.classify import classifier_arrays, classify
from fer_ray.stages.face import FaceStage
from fer_ray.stages.video import (
    CommittedRun,
    LabelVideoStage,
    ProbeStage,
    ReduceSettings,
    SegmentSettings,
    SegmentStage,
)
from fer_ray.vision import tracking

JOB = "label-videos"
FOLDERS = {name: Folder(flag, table_schema) for name, (flag, table_schema) in schema.VIDEO_FOLDERS.items()}
VIDEOS_PER_READ_TASK = 4  # probing is quick; small read tasks spread it over the cluster
ROWS_PER_FILE = 16384
# Fields that change how the job runs, not what it writes (besides runs.EXECUTION_FIELDS).
EXECUTION_FIELDS = ("classify_batch_size", "checkpoint", "detector_model", "landmark_model", "precision")
# Statuses a rerun labels again even when the video is unchanged: the storage failed, not the video.
RELABELLED = (Status.READ_ERROR,)


def list_videos(input_uri: str, retry) -> tuple[list[dict], str]:
    """One row per listed name (or the one file given) and the listing's fingerprint."""
    if input_uri.lower().endswith(VIDEO_EXTENSIONS) and not storage.exists(storage.join(input_uri, ""), retry):
        fs, path = storage.resolve(input_uri)
        info = storage.retrying(f"look up {input_uri}", lambda: fs.get_file_info(path), retry)
        entry = storage.Listed(input_uri, info.size or 0, info.mtime_ns or 0)
        return [input_row(entry)], storage.fingerprint([entry])
    lister = Lister(retry)
    rows = [input_row(entry) for entry in lister(input_uri)]
    if not rows:
        raise ConfigError(f"input: no files under {input_uri}")
    return rows, lister.fingerprint()


def input_row(entry: storage.Listed) -> dict:
    """A listed name as an input: to be probed, or with the reason it is not a video."""
    listed = {"video_uri": entry.uri, "size": entry.size, "mtime_ns": entry.mtime_ns}
    if entry.problem:
        return schema.row(schema.VIDEO_INPUTS, **listed, status=entry.problem, error=entry.error)
    if not entry.uri.lower().endswith(VIDEO_EXTENSIONS):
        return schema.row(schema.VIDEO_INPUTS, **listed, status=VideoStatus.UNSUPPORTED,
                          error=f"not a video file this job reads ({', '.join(VIDEO_EXTENSIONS)})")
    return schema.row(schema.VIDEO_INPUTS, **listed)


def mark_annotated(rows: list[dict], count: int) -> list[dict]:
    """The first `count` videos of the listing by URI (names with a video extension that the
    listing did not refuse) get an annotated MP4: the same ones in every run of a listing."""
    chosen = set(sorted(row["video_uri"] for row in rows if not row["status"])[:count])
    return [{**row, "annotate": row["video_uri"] in chosen} for row in rows]


def check(cfg: LabelVideosConfig) -> tuple[str, dict, PreprocessConfig, list[dict], str]:
    """Values, checkpoint, face settings, weights, input and output, before any Ray work."""
    cfg.validate()
    path, state = ckpt.check(cfg.checkpoint)
    face_cfg = preprocess_config(state, cfg)  # the checkpoint's face settings with this run's overrides
    FaceStage.check_weights(face_cfg)
    runs.absolute_paths(cfg)
    runs.check_input_output(cfg.input, cfg.output, cfg.retry)
    rows, fingerprint = list_videos(cfg.input, cfg.retry)
    return path, state, face_cfg, mark_annotated(rows, cfg.annotate), fingerprint


def run_settings(cfg: LabelVideosConfig, path: str, face_cfg: PreprocessConfig) -> dict:
    """What the result depends on: the video settings, the checkpoint (file and version) and the
    face settings resolved from it and the overrides."""
    settings = {k: v for k, v in runs.result_settings(cfg).items() if k not in EXECUTION_FIELDS}
    return {**settings, "checkpoint": path, "checkpoint_version": storage.file_fingerprint(path, cfg.retry),
            "face": config.to_dict(face_cfg.face)}


def run(cfg: LabelVideosConfig) -> dict:
    """Run the whole job; returns the summary (also the run's `_summary.json`)."""
    path, state, face_cfg, rows, fingerprint = check(cfg)
    with runs.holding(JOB, cfg, fingerprint, run_settings(cfg, path, face_cfg)) as staged:
        if staged.up_to_date:
            return runs.committed_summary(staged)
        committed = carry_over(staged, rows)
        start_ray()
        capacity = cluster_capacity()
        FaceStage.check_cluster(face_cfg, capacity)
        if cfg.num_gpus > 0:
            check_classifier_gpu(cfg.workers, cfg.num_gpus, capacity)
        runs.begin(staged, config.to_yaml(cfg))
        sink = ShardSink(staged.uri(), face_bytes=0, folders=FOLDERS, count=video_counts,
                         rows_per_file=cfg.rows_per_file or ROWS_PER_FILE, retry=cfg.retry)
        with sort_shuffle():
            sink.write_dataset(runs.checkpointed(staged, labelled(cfg, face_cfg, rows, path, state, staged, committed),
                                                 "video_uri"), JOB, len(rows), "videos")
        totals = runs.finish_counts(staged, len(rows))
        summary = make_summary(cfg, staged, totals, sink.totals, state)
        storage.write_bytes(staged.uri("_summary.json"), json.dumps(summary, indent=2).encode(), cfg.retry)
        runs.publish(staged, tuple(FOLDERS))
        return summary


def carry_over(staged: runs.StagedRun, rows: list[dict]) -> CommittedRun | None:
    """Mark the inputs the committed run labelled as they are now (same name, size and
    modification time; the probe checks the ETag) with the same settings: their rows are
    taken from it, not computed again. Returns the committed run's files to take them from."""
    commit = runs.seed_source(staged)
    if commit is None or not commit.files.get("videos"):
        return None
    table = results.arrow_dataset(commit.uris("videos")).to_table()
    if "mtime_ns" not in table.column_names:  # written before videos/ recorded the object
        return None
    labelled_before = {r["video_uri"]: r for r in table.to_pylist() if r["status"] not in RELABELLED}
    for row in rows:
        before = labelled_before.get(row["video_uri"])
        if not row["status"] and before and (before["size"], before["mtime_ns"]) == (row["size"], row["mtime_ns"]) \
                and was_annotated(before) == row["annotate"]:
            row.update(carried=True, etag=before["etag"])
    staged.units_carried, staged.units_listed = sum(r["carried"] for r in rows), len(rows)
    staged.unit_name = "videos"
    return CommittedRun(commit.run_uri(), {folder: tuple(commit.uris(folder)) for folder in FOLDERS})


def was_annotated(committed_row: dict) -> bool:
    """Whether the committed run was asked for the video's annotated MP4 (a video that is now
    among the first `annotate` of the listing, or no longer, is labelled again)."""
    return bool(committed_row.get("annotated") or committed_row.get("annotate_error"))


def labelled(cfg: LabelVideosConfig, face_cfg: PreprocessConfig, rows: list[dict], path: str, state: dict,
             staged: runs.StagedRun, committed: CommittedRun | None) -> ray.data.Dataset:
    """The whole pipeline, lazily: probe, segments, classify, per-video reduce."""
    settings = SegmentSettings(face_cfg, cfg.fps, cfg.segment_s, cfg.overlap_s, cfg.preroll_s, cfg.max_pixels,
                               cfg.min_iou, cfg.max_lost_s, cfg.retry, cfg.detect_every_s)
    ds = ray.data.read_datasource(RowsDatasource(rows, schema.VIDEO_INPUTS, VIDEOS_PER_READ_TASK),
                                  num_cpus=LIGHT_CPUS)
    ds = apply_stage(ds, ProbeStage, settings)
    # one segment per block: a block goes to one actor whole, and a long video's segments
    # must spread over all of them
    ds = one_row_per_block(ds)
    workers = actor_pool_size(cfg.workers, cfg.num_gpus, staged.reserved_cpus, gpu_shares_taken=1)
    ds = apply_stage(ds, SegmentStage, settings, workers=workers, num_gpus=cfg.num_gpus)
    face, clip_length = face_cfg.face, clip_length_of(state)
    # a clip model's windows follow a track through its segment: one segment per batch
    ds = classify(ds, path, workers=1, num_cpus=LIGHT_CPUS, num_gpus=cfg.num_gpus,
                  batch_size=cfg.classify_batch_size, whole_blocks=bool(clip_length),
                  prepare=functools.partial(classifier_inputs, face_shape=(face.size, face.size, face.channels),
                                            clip_length=clip_length),
                  finish=without_pixels)
    reduce = ReduceSettings(staged.uri(), tuple(state["class_names"]), cfg.smooth_s, cfg.min_run_s, cfg.min_iou,
                            cfg.max_lost_s, cfg.retry, cfg.fps, cfg.preroll_s, cfg.max_pixels, committed)
    return apply_group_stage(ds, "video_uri", LabelVideoStage, reduce)


def clip_length_of(state: dict) -> int:
    """T of a clip checkpoint (the clip length it was trained on), 0 for an image model."""
    spec = ckpt.spec_of(state)
    return spec.clip_length if spec.needs_clips else 0


def one_row_per_block(ds: ray.data.Dataset) -> ray.data.Dataset:
    """Ray Data's streaming repartition into blocks of one row, as a light task. Its tasks ask
    for a whole CPU otherwise (Ray 2.60 has no argument for it), which a pool of segment
    actors sized to the cluster never leaves free: the run would wait forever."""
    dag = ds.repartition(target_num_rows_per_block=1)._logical_plan.dag
    light = dataclasses.replace(dag, ray_remote_args={"num_cpus": LIGHT_CPUS})
    return ray.data.Dataset._from_parent(ds, LogicalPlan(light, ds.context))


def classifier_inputs(batch: dict, face_shape: tuple[int, int, int], clip_length: int = 0) -> dict:
    """Segment-stage rows -> the classify stage's arrays; rows without a face (the segment rows)
    carry a blank crop. The crop's landmarks are kept as they are for frames/. For a clip model
    (clip_length T > 0) each face gets the 'clip' of the T latest crops of its track in its
    segment, ending at it (a batch is one whole segment: classify_clip_windows)."""
    arrays = classifier_arrays(batch["face"], batch["face_shape"], batch["is_face"], batch["landmarks"], face_shape)
    if clip_length:
        arrays["clip"] = arrays.pop("image")[clip_windows(batch, clip_length)]
    rest = {key: value for key, value in batch.items() if key not in ("face", "face_shape")}
    return {**rest, **arrays, "crop_landmarks": batch["landmarks"]}


def clip_windows(batch: dict, clip_length: int) -> np.ndarray:
    """(n, T) rows of each row's window: faces by their local track, other rows alone."""
    keys = [(video, segment, track if face else -1 - row) for row, (video, segment, track, face) in enumerate(
        zip(batch["video_uri"], batch["segment_index"], batch["local_track"], batch["is_face"]))]
    return tracking.track_windows(keys, batch["timestamp_s"], clip_length)


def without_pixels(batch: dict) -> pa.Table:
    """Classified rows as schema.VIDEO_LABEL_ROWS (the crops are gone)."""
    batch = {**batch, "landmarks": batch["crop_landmarks"]}
    return pa.table({f.name: schema.arrow_array(batch[f.name], f.type) for f in schema.VIDEO_LABEL_ROWS},
                    schema=schema.VIDEO_LABEL_ROWS)


def video_counts(rows: dict, keep: dict) -> dict:
    videos = keep["videos"]
    labelled_here = videos & ~rows["carried"].astype(bool)
    return {"inputs": int(videos.sum()), "frames": int(keep["frames"].sum()), "tracks": int(keep["tracks"].sum()),
            "label_runs": int(keep["segments"].sum()), "videos_carried": int(rows["carried"][videos].sum()),
            "frames_sampled": int(rows["frames_sampled"][videos].sum()),
            "annotated": int((rows["annotated"][videos] != "").sum()),
            "frames_decoded": int(rows["frames_sampled"][labelled_here].sum()),  # carried videos' were not
            "status": Counter(rows["status"][videos].tolist()),
            "dominant": Counter(d for d in rows["dominant"][videos].tolist() if d)}


def make_summary(cfg: LabelVideosConfig, staged: runs.StagedRun, totals: dict, attempt: dict, state: dict) -> dict:
    summary = {"input": cfg.input, "output": cfg.output, "checkpoint": cfg.checkpoint, "fps": cfg.fps,
               "segment_s": cfg.segment_s, "classes": list(state["class_names"]), "inputs": 0, "frames": 0,
               "tracks": 0, "label_runs": 0, "frames_sampled": 0, "frames_decoded": 0, "annotated": 0,
               "videos_carried": 0, "status": {}, "dominant": {},
               **totals, **staged.report(), "units_run": attempt.get("inputs", 0)}
    elapsed = time.time() - staged.started
    summary["elapsed_s"] = round(elapsed, 2)
    summary["frames_per_s"] = round(attempt.get("frames_decoded", 0) / elapsed, 2) if elapsed else 0.0
    for folder in (*FOLDERS, "webvtt", "timelines"):
        summary[f"{folder}_uri"] = staged.uri(folder)
    summary["annotated_uri"] = staged.uri("annotated") if cfg.annotate else ""
    return summary
