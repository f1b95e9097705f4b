"""Evaluate a checkpoint on one split of any shards (metrics.json, confusion.png), and the
checkpoint check that evaluate and predict run on the driver before any Ray work."""
from __future__ import annotations

import contextlib
import json

import numpy as np

from fer_ray import lease, reports, storage
from fer_ray.config import TrainConfig
from fer_ray.models import checkpoint as ckpt
from fer_ray.runtime import start_ray
from fer_ray.stages.classify import classify
from fer_ray.training import data
from fer_ray.training.metrics import confusion_matrix, confusion_png, summarise


def evaluate(checkpoint_uri: str, data_uris: str, split: str, output: str, workers: int = 0,
             page: bool = True, subject_splits: dict[str, str] | None = None, hold_output: bool = True) -> dict:
    """Metrics of a checkpoint on one split of any shards; writes metrics.json and confusion.png
    (and report.html unless page is False: training writes its own page once it has finished).

    The shards are checked against the checkpoint's family (shape, label set; for a clip
    model its clips/ and the clip length it was trained on) before any work.
    hold_output: hold the output's lease while evaluating (one run per output at a time, as
    for every command); False only for training's own test evaluation, which writes into the
    output that training's lease holds already.
    """
    path, state = ckpt.check(checkpoint_uri)
    with lease.held(output, "evaluate", path) if hold_output else contextlib.nullcontext():
        return evaluate_checked(path, state, data_uris, split, output, workers, page, subject_splits)


def evaluate_checked(path: str, state: dict, data_uris: str, split: str, output: str, workers: int, page: bool,
              subject_splits: dict[str, str] | None) -> dict:
    """evaluate() once the checkpoint (`path`, its `state`) is checked."""
    cfg = ckpt.config_of(state)
    eval_cfg = TrainConfig(data=data_uris, output=output, model=cfg.model, label_set=cfg.resolved_label_set(),
                           clip_length=cfg.clip_length, train_split=split, val_split=split, test_split=split)
    info = data.scan(eval_cfg, subject_splits)  # a subject fold's split, when given
    start_ray()
    predicted = classify(data.read_split(info, eval_cfg.label_set, split), path, workers)
    labels, predictions = [], []
    for batch in predicted.select_columns(["label", "prediction"]).iter_batches(batch_format="numpy"):
        labels.append(batch["label"])
        predictions.append(batch["prediction"])
    class_names = tuple(state["class_names"])
    confusion = confusion_matrix(np.concatenate(labels), np.concatenate(predictions), len(class_names))
    report = {"checkpoint": path, "data": data_uris, "split": split,
              "model": cfg.model, "clip_length": cfg.clip_length, "epoch": state["epoch"],
              **summarise(confusion, class_names),
              "confusion": confusion.tolist(), "class_names": list(class_names)}
    write_reports(output, report, confusion, class_names, f"{cfg.model} on {split}")
    if page:
        reports.write_after_run(output)
    return report


def default_output(checkpoint_uri: str, split: str) -> str:
    """Where an evaluation goes when no output is given: `<checkpoint's run>/eval-<split>`."""
    return storage.join(checkpoint_uri.removesuffix("/checkpoint.pt"), f"eval-{split}")


def write_reports(output: str, report: dict, confusion: np.ndarray, class_names, title: str) -> None:
    storage.write_bytes(storage.join(output, "metrics.json"), json.dumps(report, indent=2).encode())
    storage.write_bytes(storage.join(output, "confusion.png"), confusion_png(confusion, class_names, title))
