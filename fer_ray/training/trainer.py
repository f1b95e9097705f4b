"""Training driver: check the data, build the TorchTrainer, fit, then test and plot.

Outputs under cfg.output:
  config.yaml            the resolved config (usable with `fer-ray train --config`)
  train/                 Ray Train's run: per-epoch checkpoint_*/checkpoint.pt, its state
  checkpoint.pt          the best-validation checkpoint (what evaluate/predict/export use)
  metrics.json, confusion.png   the test split, evaluated with checkpoint.pt
  learning_curve.png     loss, accuracy and macro-F1 per epoch
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from fer_ray import config, reports, runtime, storage
from fer_ray.config import ConfigError, TrainConfig
from fer_ray.face68 import N_VALUES
from fer_ray.logs import say
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model, get_spec, pretrained
from fer_ray.progress import Progress
from fer_ray.runtime import start_ray
from fer_ray.training import data
from fer_ray.training.evaluate import evaluate
from fer_ray.training.loop import PROGRESS_FILE, train_loop_per_worker
from fer_ray.training.metrics import learning_curve_png

RUN_NAME = "train"
SCORE = "val_macro_f1"


def check(cfg: TrainConfig, subject_splits: dict[str, str] | None = None) -> data.DataInfo:
    """Everything that can be known wrong before training: values, data, splits, shapes, weights.
    subject_splits: one subject fold's split of the subjects (fer_ray.training.folds)."""
    absolute_paths(cfg)
    cfg.validate()
    cfg.lr = cfg.resolved_lr()  # config.yaml and the checkpoint record the rate the run used
    if cfg.weights_path:
        problem = storage.check_readable(cfg.weights_path)
        if problem:
            raise ConfigError(f"weights_path: {problem}")
    if cfg.init == "pretrained":
        pretrained.check_family(cfg.model)
        pretrained.hdf5_uri(cfg.model)
    info = data.scan(cfg, subject_splits)
    if info.is_clips:
        cfg.clip_length = info.clip_length  # the model is built for it; the checkpoint records it
    check_resume(cfg, info)
    return info


def absolute_paths(cfg: TrainConfig) -> None:
    """Local paths in the config made absolute, in place (see storage.absolute)."""
    cfg.data = ",".join(storage.absolute(uri) for uri in cfg.data_uris)
    cfg.output, cfg.weights_path = storage.absolute(cfg.output), storage.absolute(cfg.weights_path)


def check_resume(cfg: TrainConfig, info: data.DataInfo) -> None:
    """Resuming continues the output's checkpoints; they must be of this family and label set."""
    if not cfg.resume:
        return
    try:
        state = ckpt.load(cfg.output)
    except ConfigError:
        return  # nothing to resume: a fresh run
    shape = ("fc_size", "clip_length")  # what the saved weights were built for
    built_for = {name: getattr(ckpt.config_of(state), name) for name in shape}
    if built_for != {name: getattr(cfg, name) for name in shape}:
        raise ConfigError(f"output: {cfg.output} holds a {state['model_name']!r} run built for {built_for}, which "
                          f"cannot resume with fc_size {cfg.fc_size}, clip_length {cfg.clip_length}; choose "
                          f"another --output or pass --resume false to start over there")
    if state["model_name"] != cfg.model or tuple(state["class_names"]) != info.class_names:
        raise ConfigError(
            f"output: {cfg.output} holds a {state['model_name']!r} run over {len(state['class_names'])} classes, "
            f"which cannot resume as {cfg.model!r} over {len(info.class_names)}; choose another --output "
            f"or pass --resume false to start over there")
    # the workers would fail on weights saved by another version of the family, after start-up
    ckpt.load_weights(create_model(cfg.model, num_classes=len(info.class_names), **ckpt.architecture(cfg)),
                      state["model"], f"output: {cfg.output} holds a {cfg.model!r} run whose weights do not fit "
                      f"this version's {cfg.model!r}", "choose another --output or pass --resume false to start "
                      "over there")


def run(cfg: TrainConfig, callbacks: tuple = (), eval_workers: int = 1, test: bool = True,
        trial_cpus: float = 0.0, progress: bool = True, subject_splits: dict[str, str] | None = None) -> dict:
    """Train, keep the best checkpoint, evaluate it on the test split; returns the test report.

    test=False (Tune trials) skips the test split: a sweep chooses by validation only, and
    the test split stays unseen until the chosen config is trained and tested. trial_cpus:
    what the calling Tune trial (or subject fold's task) holds beside the worker group.
    progress: show the epochs as they finish (a Tune trial's driver has no one to show them
    to); subject_splits: a subject fold's split of the subjects, in place of the shards' own.
    """
    if cfg.folds > 1:  # one run is one fold; a caller that skipped folds.run must not get a fixed split silently
        raise ConfigError(f"folds: {cfg.folds} subject folds are run by fer_ray.training.folds.run, not trainer.run")
    info = check(cfg, subject_splits)
    start_ray()
    fit_to_cluster(cfg, runtime.cluster_capacity(), trial_cpus)
    if not cfg.resume:
        # Only Ray Train's epoch checkpoints go (the new run must not continue them); the
        # previous run's checkpoint.pt stays usable until this run writes its own at the end.
        storage.remove_dir(storage.join(cfg.output, RUN_NAME))
        storage.remove_dir(storage.join(cfg.output, PROGRESS_FILE))
    storage.write_bytes(storage.join(cfg.output, "config.yaml"), config.to_yaml(cfg).encode())
    started = time.time()
    with Progress("train", cfg.epochs, lambda: read_progress(cfg.output), "epochs", shown=progress), \
            interrupts_stay_interrupts():
        result = build_trainer(cfg, info, callbacks).fit()
    return finish(cfg, result, time.time() - started, eval_workers if test else 0, subject_splits)


@contextlib.contextmanager
def interrupts_stay_interrupts():
    """Ctrl-C during and after Ray Train's fit() is a KeyboardInterrupt, as anywhere else (the
    CLI exits 130). In the main thread fit() installs its own SIGINT handler, which aborts the
    run and then calls sys.exit(0) (Ray re-raises that as SystemExit(1) when it lands in the
    ray.get that fit() waits in): `fer-ray train` stopped with exit code 1 and no line saying
    why. fit() also leaves that handler installed when it returns, so every later Ctrl-C (during
    the test-split evaluation, or in a notebook's next cell) was swallowed, the third exiting the
    process with 0, and the handler kept the finished run's controller actor alive. Here a
    SystemExit out of fit(), which only that handler raises, becomes KeyboardInterrupt, and the
    handler from before fit() is put back."""
    with runtime.signal_handlers_kept(signal.SIGINT):
        try:
            yield
        except SystemExit:
            raise KeyboardInterrupt("Ray Train aborted the run; the same command resumes it from its last "
                                    "epoch checkpoint") from None


def read_progress(output: str) -> dict:
    """The last epoch's progress (training.loop.write_progress), {} before the first."""
    uri = storage.join(output, PROGRESS_FILE)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else {}


def fit_to_cluster(cfg: TrainConfig, capacity: runtime.Capacity, trial_cpus: float = 0.0) -> None:
    """Resolve cfg.cpus_per_worker (0 = fit) for this cluster, in place, or raise ConfigError:
    a worker group the cluster cannot place would wait for it forever."""
    cfg.cpus_per_worker = runtime.fit_train(cfg.workers, cfg.cpus_per_worker, cfg.gpu, capacity, trial_cpus)


def loop_config(cfg: TrainConfig, info: data.DataInfo, train_ds) -> dict:
    """What every worker needs besides its data shards (computed once, on the driver)."""
    spec = get_spec(cfg.model)
    init_state = None
    norm = data.normalisation(train_ds, info.face_shape, info.clip_length) if spec.input_size else {}
    if cfg.init == "pretrained":
        # the pretrained weights expect their own input scaling, not this data's statistics
        init_state, norm = pretrained_start(cfg, info.class_names), pretrained.pixel_norm(spec.input_size)
    return {
        "config": config.to_dict(cfg),
        "class_names": list(info.class_names),
        "class_weights": info.class_weights(cfg.train_split) if cfg.class_weighted else None,
        "norm": norm,
        "face_side": info.face_shape[0] or 100,
        "face": data.face_settings(cfg),
        "init_state": init_state,
    }


def pretrained_start(cfg: TrainConfig, class_names: tuple[str, ...]) -> dict:
    """The first epoch's weights: the family's pretrained ones, the head mapped by class name."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(class_names), **ckpt.architecture(cfg))
    state, shared = pretrained.initial_state(model, cfg.model, tuple(class_names))
    fresh = [name for name in class_names if name not in shared]
    say(f"init pretrained: {cfg.model}'s head kept for {', '.join(shared) or 'no class'}; "
        f"new for {', '.join(fresh) or 'no class'}")
    return state


def should_cache(cfg: TrainConfig, info: data.DataInfo) -> bool:
    """Decoding Parquet again every epoch costs seconds per epoch on small data; keep the
    decoded splits in the object store when they take at most half of it."""
    if cfg.cache != "auto":
        return cfg.cache == "on"
    rows = sum(sum(info.counts[split]) for split in (cfg.train_split, cfg.val_split))
    height, width, channels = info.face_shape
    needed = rows * (max(info.clip_length, 1) * height * width * channels + N_VALUES * 4 + 8)
    return needed <= 0.5 * ray.available_resources().get("object_store_memory", 0)


def build_trainer(cfg: TrainConfig, info: data.DataInfo, callbacks: tuple = ()) -> TorchTrainer:
    label_set = cfg.resolved_label_set()
    datasets = {"train": data.read_split(info, label_set, cfg.train_split),
                "val": data.read_split(info, label_set, cfg.val_split)}
    if should_cache(cfg, info):
        datasets = {name: ds.materialize() for name, ds in datasets.items()}
    fs, path = storage.resolve(cfg.output)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, info, datasets["train"]),
        # SPREAD is Ray's soft spreading: workers pack where no other node has room, never wait
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.gpu, resources_per_worker=resources,
                                     placement_strategy=cfg.placement.upper()),
        run_config=RunConfig(
            name=RUN_NAME, storage_path=path, storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max"),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
    )


def finish(cfg: TrainConfig, result: ray.train.Result, elapsed: float, eval_workers: int,
           subject_splits: dict[str, str] | None = None) -> dict:
    """Copy the best checkpoint to output/checkpoint.pt, draw the learning curve and, unless
    eval_workers is 0, test the checkpoint."""
    if result.error:
        raise result.error
    best_state, history = best_and_history(cfg, result)
    best_state["history"] = history
    best_uri = storage.join(cfg.output, ckpt.FILENAME)
    storage.write_bytes(best_uri, ckpt.to_bytes(best_state))
    storage.write_bytes(storage.join(cfg.output, "learning_curve.png"), learning_curve_png(history))
    report = (evaluate(best_uri, cfg.data, cfg.test_split, cfg.output, workers=eval_workers, page=False,
                       subject_splits=subject_splits, hold_output=False)  # under training's lease
              if eval_workers else {})
    report.update({"best_epoch": best_state["epoch"], "epochs": len(history), "train_s": round(elapsed, 1),
                   "history": history, "output": cfg.output})
    storage.write_bytes(storage.join(cfg.output, "metrics.json"), json.dumps(report, indent=2).encode())
    if eval_workers:  # a Tune trial (not tested) gets no page: the sweep has one
        reports.write_after_run(cfg.output)
    return report



def best_and_history(cfg: TrainConfig, result: ray.train.Result) -> tuple[dict, list[dict]]:
    """(the best epoch's checkpoint, the whole run's history). Ray Train's record of the run
    holds no checkpoint when an earlier run did every epoch and was killed after uploading the
    last checkpoint but before Ray recorded it: the workers resumed from the run's own files
    (training.loop) with no epoch left. Then those files decide."""
    if result.checkpoint is not None:
        best = result.get_best_checkpoint(metric=SCORE, mode="max") or result.checkpoint
        with best.as_directory() as directory:
            best_state = ckpt.load_local(directory)
        with result.checkpoint.as_directory() as directory:
            return best_state, ckpt.load_local(directory)["history"]
    states = list(ckpt.epoch_states(cfg.output))
    if not states:
        # the advice before the folder: the CLI shortens a failure to one line of 200 characters
        raise RuntimeError(f"training: no epoch checkpoint of this run loads; run it again with --resume false to "
                           f"start over (its epochs: {storage.join(cfg.output, RUN_NAME)})")
    history = max(states, key=lambda state: state["epoch"])["history"]
    score = {entry["epoch"]: entry[SCORE] for entry in history}
    return max(states, key=lambda state: score[state["epoch"]]), history


def with_fields(cfg: TrainConfig, values: dict) -> TrainConfig:
    """A copy of cfg with dotted-path values applied (Tune trials, tests)."""
    copy = dataclasses.replace(cfg)
    for path, value in values.items():
        config.set_field(copy, path, value)
    return copy
