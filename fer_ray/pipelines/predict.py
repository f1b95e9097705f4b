"""Predict: images (a folder or URI) -> faces found and aligned as in preprocessing -> class
probabilities per face, in one Parquet or CSV file (or Parquet shards for a directory output).
One PredictConfig says what to run: the checkpoint's face settings, with this machine's
overrides, and how many face actors on which devices.

Every input image gets at least one row: images without a usable face keep their status
and error, with empty probabilities, so nothing silently disappears.

A clip checkpoint (cnn_lstm, c3d) predicts over the clips/ of a committed video preprocess
output instead: one row per clip (clip_id, source_uri, subject, split, label, confidence,
p_<class>), its frames already aligned by the ingest. Both kinds are a `Plan` (what is read,
how the rows are made); writing one file or committed shards is the same for both.
"""
from __future__ import annotations

import functools
import json
import posixpath
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray.data

from fer_ray import config, results, storage
from fer_ray.config import ConfigError, FaceConfig, PredictConfig, PreprocessConfig, RetryConfig, apply_dict
from fer_ray.datasets import Inputs
from fer_ray.datasets.common import IMAGE_EXTENSIONS, Lister, input_row, listed_table
from fer_ray.models import checkpoint as ckpt
from fer_ray.pipelines import runs
from fer_ray.pipelines.inputs import read_inputs
from fer_ray.pipelines.writer import Folder, ShardSink, merge_counts
from fer_ray.runtime import LIGHT_CPUS, Capacity, actor_pool_size, check_classifier_gpu, cluster_capacity, start_ray
from fer_ray.schema import INPUT_ROWS, Status, rows_table
from fer_ray.stages.base import apply_stage
from fer_ray.stages.classify import classifier_arrays, classify
from fer_ray.stages.face import FaceStage
from fer_ray.training import data

KEEP = ("source_uri", "face_index", "status", "error", "n_faces", "bbox", "det_score")
FACE_OVERRIDES = ("detector", "detector_model", "landmark_model")  # PredictConfig fields of FaceConfig


def face_config(state: dict, cfg: PredictConfig) -> FaceConfig:
    """The face settings the training data was made with, so predictions see the same crops,
    with this run's overrides ('' keeps the checkpoint's). FAN runs in fp32 on a CPU, so the
    checkpoint's precision applies on GPUs only."""
    face = FaceConfig()
    apply_dict(face, state.get("face", {}))
    for name in FACE_OVERRIDES:
        if getattr(cfg, name):
            setattr(face, name, getattr(cfg, name))
    face.precision = cfg.precision or (face.precision if cfg.num_gpus > 0 else "fp32")
    return face


def preprocess_config(state: dict, cfg: PredictConfig) -> PreprocessConfig:
    """The face stage's configuration: the checkpoint's face settings and this run's actors."""
    face_cfg = PreprocessConfig(layout="folder", input=cfg.input, output="-", face=face_config(state, cfg),
                                batch_size=cfg.batch_size, workers=cfg.workers, num_gpus=cfg.num_gpus,
                                retry=cfg.retry)
    face_cfg.validate()
    spec, face = state["spec"], face_cfg.face
    if spec["input_size"] and (face.size, face.channels) != (spec["input_size"], spec["channels"]):
        raise ConfigError(f"checkpoint: its faces are {face.size}px {face.color}, but "
                          f"{state['model_name']} expects {spec['input_size']}px x{spec['channels']}")
    return face_cfg


def model_inputs(batch: dict, face_shape: tuple[int, int, int]) -> dict:
    """FaceStage rows -> the classify stage's arrays (a blank crop where no face was found)."""
    has_face = np.asarray(batch["is_face"], bool)
    arrays = classifier_arrays(batch["face"], batch["face_shape"], has_face, batch["landmarks"], face_shape)
    return {**{key: batch[key] for key in (*KEEP, "is_manifest")}, "has_face": has_face, **arrays}


def output_rows(batch: dict, class_names: tuple[str, ...], keep: tuple[str, ...] = KEEP) -> pa.Table:
    """One plain-Arrow row per face (or per input without one), or per clip: the `keep`
    columns, probabilities as one column per class (NaN where no face), the predicted label
    name, the box as four columns (CSV holds no lists; clips have none). `is_manifest`
    marks the one row of each input that counts it."""
    has_face = np.asarray(batch.pop("has_face"), bool)
    probabilities = np.array(batch.pop("probabilities"), np.float32)  # a copy: batches are read-only
    probabilities[~has_face] = np.nan
    names = np.array(class_names, dtype=object)
    columns = {key: batch[key] for key in keep if key != "bbox"}
    columns["label"] = np.where(has_face, names[batch.pop("prediction")], "")
    columns["confidence"] = np.where(has_face, probabilities.max(axis=1, initial=0.0), np.nan)
    columns.update({f"p_{name}": probabilities[:, i] for i, name in enumerate(class_names)})
    if "bbox" in keep:
        bbox = np.asarray(list(batch["bbox"]), np.float32).reshape(-1, 4)  # rows of a 2-D array, or arrays
        columns.update({f"bbox_{name}": bbox[:, i] for i, name in enumerate(("x0", "y0", "x1", "y1"))})
    columns["is_manifest"] = np.asarray(batch["is_manifest"], bool)
    return pa.table({name: pa.array(list(v) if v.dtype == object else v) for name, v in columns.items()})


def predict_counts(rows: dict, keep: dict) -> dict:
    inputs = rows["is_manifest"].astype(bool)
    return {"inputs": int(inputs.sum()), "rows": len(inputs), "status": Counter(rows["status"][inputs].tolist())}


def list_images(input_uri: str, retry: RetryConfig) -> Inputs:
    """Every listed name under the input (or the one image given) as an input row."""
    if input_uri.lower().endswith(IMAGE_EXTENSIONS) and not storage.exists(storage.join(input_uri, ""), retry):
        one = rows_table([input_row(input_uri, "predict")], INPUT_ROWS)
        return Inputs(one, 1, storage.file_fingerprint(input_uri, retry))
    lister = Lister(retry)
    rows = listed_table(lister(input_uri), "predict", lambda uri: input_row(uri, "predict"))
    if not rows.num_rows:
        raise ConfigError(f"input: no files under {input_uri}")
    return Inputs(rows, rows.num_rows, lister.fingerprint())


@dataclass
class Plan:
    """What a predict run reads and how its output rows are made (faces in images, or clips)."""
    inputs: Inputs
    settings: dict  # what the result depends on besides its input (runs.plan)
    id_column: str  # the row id a resumed directory output skips by
    rows: Callable[[int], ray.data.Dataset]  # CPUs the run reserves -> the output rows, lazily
    check_cluster: Callable[[Capacity], None]


def check(cfg: PredictConfig) -> Plan:
    """Values, checkpoint, face settings (or clips), weights, input and output, before any Ray work."""
    cfg.validate()
    path, state = ckpt.check(cfg.checkpoint)
    if ckpt.spec_of(state).needs_clips:
        return clip_plan(cfg, path, state)
    return face_plan(cfg, path, state)


def check_input_output(cfg: PredictConfig) -> None:
    runs.absolute_paths(cfg)
    runs.check_input_output(cfg.input, cfg.output, cfg.retry, is_file=cfg.output_format != "shards")


def face_plan(cfg: PredictConfig, path: str, state: dict) -> Plan:
    face_cfg = preprocess_config(state, cfg)
    FaceStage.check_weights(face_cfg)
    check_input_output(cfg)
    refuse_clips(cfg, state)
    inputs = list_images(cfg.input, cfg.retry)
    return Plan(inputs, run_settings(path, face_cfg), "source_uri",
                lambda reserved: predictions(cfg, face_cfg, inputs, path, state, reserved),
                lambda capacity: check_cluster(cfg, face_cfg, capacity))


def refuse_clips(cfg: PredictConfig, state: dict) -> None:
    """An image checkpoint given a video preprocess output would read its Parquet files as images."""
    commit = results.read_commit(cfg.input) if not cfg.input.lower().endswith(IMAGE_EXTENSIONS) else None
    if commit is not None and data.CLIPS in commit.files:
        raise ConfigError(f"input: {cfg.input} holds clips/ (video clips), but {state['model_name']!r} classifies "
                          f"faces in images; give a clip checkpoint ({', '.join(config.clip_models())}) or images")


def check_cluster(cfg: PredictConfig, face_cfg: PreprocessConfig, capacity: Capacity) -> None:
    """The face actors and, on GPUs, the classifier's share beside them must fit the cluster:
    an actor asking for a GPU that no node has would wait for it forever."""
    FaceStage.check_cluster(face_cfg, capacity)
    if cfg.num_gpus > 0:
        check_classifier_gpu(cfg.workers, cfg.num_gpus, capacity)


def run_settings(path: str, face_cfg: PreprocessConfig) -> dict:
    """What a predict run's result depends on, besides its input: the checkpoint (file and
    version) and the face settings resolved from it and this run's overrides. The execution
    fields (runs.EXECUTION_FIELDS: workers, batch_size, num_gpus, ...) are not part of it."""
    return {"checkpoint": path, "checkpoint_version": storage.file_fingerprint(path, face_cfg.retry),
            "face": config.to_dict(face_cfg.face)}


def run(cfg: PredictConfig) -> dict:
    """Run the whole job; returns the summary (a directory output also holds it as `_summary.json`)."""
    plan = check(cfg)
    if cfg.output_format != "shards":
        start_ray()
        plan.check_cluster(cluster_capacity())
        started = time.time()
        counts = write_file(plan.rows(0), cfg.output, cfg.output_format, plan.inputs.count)
        return {**counts, "output": cfg.output, "elapsed_s": round(time.time() - started, 2)}
    with runs.holding("predict", cfg, plan.inputs.fingerprint, plan.settings) as staged:
        if staged.up_to_date:
            return runs.committed_summary(staged)
        start_ray()
        plan.check_cluster(cluster_capacity())
        runs.begin(staged, config.to_yaml(cfg))
        sink = ShardSink(staged.uri(), face_bytes=0, folders={"predictions": Folder(None, None)}, count=predict_counts,
                         rows_per_file=cfg.rows_per_file, retry=cfg.retry)
        sink.write_dataset(runs.checkpointed(staged, plan.rows(staged.reserved_cpus), plan.id_column), "predict",
                           plan.inputs.count)
        summary = {**runs.finish_counts(staged, plan.inputs.count), **staged.report(), "output": cfg.output,
                   "predictions_uri": staged.uri("predictions"), "elapsed_s": round(time.time() - staged.started, 2)}
        storage.write_bytes(staged.uri("_summary.json"), json.dumps(summary, indent=2).encode(), cfg.retry)
        runs.publish(staged, ("predictions",))
        return summary


def predictions(cfg: PredictConfig, face_cfg: PreprocessConfig, inputs: Inputs, path: str, state: dict,
                reserved_cpus: int = 0) -> ray.data.Dataset:
    """The whole pipeline, lazily: fetch, find faces, classify, one output row per face."""
    ds = read_inputs(face_cfg, inputs)
    # on GPUs the classifier holds one GPU share beside the face actors
    workers = actor_pool_size(cfg.workers, cfg.num_gpus, reserved_cpus, gpu_shares_taken=1)
    ds = apply_stage(ds, FaceStage, face_cfg, workers=workers, batch_size=cfg.batch_size, num_gpus=cfg.num_gpus)
    ds = ds.filter(lambda row: row["is_face"] or row["is_manifest"], num_cpus=LIGHT_CPUS)
    face = face_cfg.face
    # One classifier actor, light beside the face actors (one forward pass per batch of crops);
    # on GPUs it holds one GPU share, as a face actor does.
    return classify(ds, path, workers=1, num_cpus=LIGHT_CPUS, num_gpus=cfg.num_gpus,
                    prepare=functools.partial(model_inputs, face_shape=(face.size, face.size, face.channels)),
                    finish=functools.partial(output_rows, class_names=tuple(state["class_names"])))


CLIP_COLUMNS = ("clip_id", "source_uri", "subject", "split")  # read from clips/ and kept
CLIP_KEEP = (*CLIP_COLUMNS, "status")


def clip_plan(cfg: PredictConfig, path: str, state: dict) -> Plan:
    """Every clip of the input's committed clips/, checked against the checkpoint's frames and T."""
    check_input_output(cfg)
    commit = results.read_commit(cfg.input)
    if commit is None or data.CLIPS not in commit.files:
        held = ", ".join(f"{name}/" for name in commit.files) if commit else "no committed fer-ray result"
        raise ConfigError(f"input: {state['model_name']!r} is a clip model: it predicts over the clips/ of a "
                          f"video preprocess output, but {cfg.input} holds {held}; give such an output, or "
                          f"an image checkpoint for images")
    files = commit.uris(data.CLIPS)
    trained = ckpt.config_of(state)
    clip_length, frame_shape = data.clip_shape(files, cfg.input)
    data.check_input(config.TrainConfig(data=cfg.input, model=trained.model, clip_length=trained.clip_length),
                     data.DataInfo(files, (), {}, frame_shape, clip_length))
    count = results.arrow_dataset(files).count_rows()
    settings = {"checkpoint": path, "checkpoint_version": storage.file_fingerprint(path, cfg.retry)}
    return Plan(Inputs(None, count, f"{commit.run}:{','.join(files)}"), settings, "clip_id",
                lambda reserved: clip_predictions(cfg, files, path, state),
                lambda capacity: check_classifier_gpu(0, cfg.num_gpus, capacity) if cfg.num_gpus > 0 else None)


def clip_predictions(cfg: PredictConfig, files: list[str], path: str, state: dict) -> ray.data.Dataset:
    """The clip pipeline, lazily: read clips/, classify (workers actors), one output row per clip."""
    ds = results.read_dataset(files, [*CLIP_COLUMNS, "frames", "frame_shape"])
    return classify(ds, path, workers=cfg.workers, num_gpus=cfg.num_gpus, prepare=clip_model_inputs,
                    finish=functools.partial(output_rows, class_names=tuple(state["class_names"]), keep=CLIP_KEEP))


def clip_model_inputs(batch: dict) -> dict:
    """clips/ rows -> the classify stage's 'clip' (B, T, C, H, W), every clip kept (labelled or
    not), each counted once as an input with status ok."""
    kept = {key: batch[key] for key in CLIP_COLUMNS}
    ones = np.ones(len(batch["clip_id"]), bool)
    return {**kept, "clip": data.clip_pixels(batch["frames"], batch["frame_shape"]), "has_face": ones,
            "is_manifest": ones, "status": np.full(len(ones), str(Status.OK), dtype=object)}


def write_file(ds: ray.data.Dataset, output: str, file_format: str, expected_inputs: int) -> dict:
    """Stream the rows into one file, parquet or csv as file_format says (the driver holds one
    batch at a time), written beside the target and moved over it at the end, so a failed
    run leaves the previous file whole; so does a file that does not account for every one
    of `expected_inputs` (RunError). Returns the counts of what was written."""
    fs, path = storage.resolve(output)
    staging = f"{output}.tmp-{uuid.uuid4().hex[:8]}"
    fs.create_dir(posixpath.dirname(path), recursive=True)
    parts, writer, schema = [], None, None
    try:
        with fs.open_output_stream(storage.resolve(staging)[1]) as stream:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                table = batch.drop_columns(["is_manifest"])
                # the first batch's types for all (a later batch may come as large_string, say);
                # pyarrow's CSVWriter does not tell its schema, so it is kept here
                schema = schema or table.schema
                table = table.cast(schema)
                writer = writer or (pq.ParquetWriter(stream, schema) if file_format == "parquet"
                                    else pacsv.CSVWriter(stream, schema))
                writer.write_table(table)
                parts.append(predict_counts({name: batch.column(name).to_numpy(zero_copy_only=False)
                                             for name in ("is_manifest", "status")}, {}))
            if writer is not None:
                writer.close()
        counts = merge_counts(parts)
        accounted = counts.get("inputs", 0)
        if accounted != expected_inputs:
            raise runs.RunError(f"predict: {accounted} of {expected_inputs} inputs are accounted for; "
                                f"{output} was not written (a previous file there is unchanged)")
        storage.replace_file(staging, output)
    finally:
        storage.remove_dir(staging)
    return counts
