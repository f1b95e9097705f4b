"""Run a checkpoint over shards or faces: the classify stage, evaluation and its reports."""
from __future__ import annotations

import json

import numpy as np
import torch

import ray
import ray.data

from fer_ray import storage
from fer_ray.config import ConfigError, TrainConfig
from fer_ray.runtime import start_ray
from fer_ray.stages.base import Stage, apply_stage, available_cpus
from fer_ray.training import checkpoint as ckpt
from fer_ray.training import data
from fer_ray.training.metrics import confusion_matrix, confusion_png, summarise


class ClassifyStage(Stage):
    """'image' uint8 (B, C, H, W) and 'landmarks' (B, 68, 2) -> 'probabilities' (B, K) and 'prediction'.

    Loads the checkpoint once per actor; one forward pass per batch, standardised with
    the normalisation stored in the checkpoint.
    """
    is_actor = True
    num_cpus = 1.0
    batch_size = 128

    def __init__(self, checkpoint_uri: str):
        from fer_ray.models import get_spec
        from fer_ray.models.inputs import Batcher

        state = ckpt.load(checkpoint_uri)
        self.model = ckpt.build_model(state)
        spec = get_spec(state["model_name"])
        norm = {key: value.numpy() for key, value in state["norm"].items()}
        self.batcher = Batcher(spec, norm, torch.device("cpu"), spec.input_size or 100)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        tensors = {key: torch.from_numpy(np.asarray(batch[key])) for key in ("image", "landmarks")}
        probabilities = torch.softmax(self.model(*self.batcher.inputs(tensors)).float(), dim=1).numpy()
        out = {key: value for key, value in batch.items() if key not in ("image", "landmarks")}
        return {**out, "probabilities": probabilities, "prediction": probabilities.argmax(1)}


def classify(ds: ray.data.Dataset, checkpoint_uri: str, workers: int = 0,
             num_cpus: float | None = None) -> ray.data.Dataset:
    """workers=0: one actor per CPU but one; Ray Data lists Parquet files with a whole-CPU task,
    which a pool holding every CPU would starve forever."""
    return apply_stage(ds, ClassifyStage, checkpoint_uri, workers=workers or max(1, available_cpus() - 1),
                       num_cpus=num_cpus)


def evaluate(checkpoint_uri: str, data_uris: str, split: str, output: str, workers: int = 0) -> dict:
    """Metrics of a checkpoint on one split of any shards; writes metrics.json and confusion.png.

    The shards are checked against the checkpoint's family (shape, label set) before any work.
    """
    path, state = check_checkpoint(checkpoint_uri)
    cfg = ckpt.config_of(state)
    eval_cfg = TrainConfig(data=data_uris, output=output, model=cfg.model, label_set=cfg.resolved_label_set(),
                           train_split=split, val_split=split, test_split=split)
    info = data.scan(eval_cfg)
    start_ray()
    predicted = classify(data.read_split(info, eval_cfg.label_set, split), path, workers)
    labels, predictions = [], []
    for batch in predicted.select_columns(["label", "prediction"]).iter_batches(batch_format="numpy"):
        labels.append(batch["label"])
        predictions.append(batch["prediction"])
    class_names = tuple(state["class_names"])
    confusion = confusion_matrix(np.concatenate(labels), np.concatenate(predictions), len(class_names))
    report = {"checkpoint": path, "data": data_uris, "split": split,
              "model": cfg.model, "epoch": state["epoch"], **summarise(confusion, class_names),
              "confusion": confusion.tolist(), "class_names": list(class_names)}
    write_reports(output, report, confusion, class_names, f"{cfg.model} on {split}")
    return report


def write_reports(output: str, report: dict, confusion: np.ndarray, class_names, title: str) -> None:
    storage.write_bytes(storage.join(output, "metrics.json"), json.dumps(report, indent=2).encode())
    storage.write_bytes(storage.join(output, "confusion.png"), confusion_png(confusion, class_names, title))


def check_checkpoint(uri: str, expect_family: str = "") -> tuple[str, dict]:
    """(path, state), built once on the driver so a bad checkpoint fails before any Ray work."""
    path, state = ckpt.locate(uri)
    ckpt.build_model(state, expect_family or None)
    if not state.get("class_names"):
        raise ConfigError(f"checkpoint: {uri} has no class names")
    return path, state
