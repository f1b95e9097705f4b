"""One training step of every train config under configs/ on the sample data, through the
training loop's own step (fer_ray.training.loop.train_step, what each Ray Train worker runs
per batch), without starting a worker group: a recipe whose family, label set, architecture
fields or loss settings no longer fit the trainer fails here.

The data: the session's preprocessed FER2013-style sample faces (48 px grey, dlib landmarks)
for the image and landmark families, the region-fused JAFFE sample (mixed/) for mixed_cnn, and
the clip tests' synthetic 12-frame clips for the clip families. The 48 px faces are resized to
a family's own side (100 px grey for enm, 224 px RGB for baseline_cnn and resnet18), their
landmarks scaled alike; tests/unit/test_recipes.py checks that each recipe's preprocess makes
its family's size itself.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from fer_ray import results
from fer_ray.config import TrainConfig
from fer_ray.labels import LABEL_SETS
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model, get_spec
from fer_ray.models.inputs import Batcher
from fer_ray.training import data, loop
from tests.clip_shards import clip_table
from tests.unit.test_recipes import TRAIN_FILES, load

pytestmark = pytest.mark.integration
STEP_ROWS = 4  # samples in the one step (2 for the 224 px families: CPU time)
FACE_COLUMNS = ["face", "face_shape", "landmarks", "split", "label"]


@pytest.fixture(scope="module")
def sample_rows(fer_shards, synthesized):
    """Train-split rows as numpy columns, by data folder: faces/, mixed/ and clips/."""
    faces = results.read_table(fer_shards, "faces", FACE_COLUMNS)
    mixed = results.read_table(synthesized[0], "mixed", FACE_COLUMNS[:-1] + ["mixed_label"])
    clips = clip_table(subjects=5, takes=1, frames=12)  # 1 train subject, 4 clips
    return {folder: train_rows(table) for folder, table in
            (("faces", faces), ("mixed", mixed), (data.CLIPS, clips))}


def train_rows(table) -> dict:
    rows = table.filter(pc.equal(table["split"], "train")).slice(0, 64)
    return {name: rows[name].to_numpy(zero_copy_only=False) for name in rows.column_names}


def model_batch(cfg: TrainConfig, rows: dict) -> dict:
    """The rows as the trainer's Ray Data conversion makes them (data.to_arrays/clip_arrays),
    in the family's input size, the first few of the label set's classes."""
    spec, label_set = get_spec(cfg.model), cfg.resolved_label_set()
    arrays = data.clip_arrays(rows, label_set) if spec.needs_clips else data.to_arrays(rows, label_set)
    count = 2 if spec.input_size >= 224 else STEP_ROWS
    arrays = {name: value[:count] for name, value in arrays.items()}
    if spec.input_size and not spec.needs_clips:
        arrays = resized(arrays, spec.input_size, spec.channels)
    return {name: torch.as_tensor(value) for name, value in arrays.items()}


def resized(arrays: dict, side: int, channels: int) -> dict:
    images = arrays["image"]  # uint8 (B, C, H, W)
    scale = side / images.shape[-1]
    out = np.stack([cv2.resize(image[0], (side, side), interpolation=cv2.INTER_LINEAR) for image in images])
    out = np.repeat(out[:, None], channels, axis=1)
    return {**arrays, "image": np.ascontiguousarray(out), "landmarks": arrays["landmarks"] * scale}


def batch_norm(batch: dict, spec) -> dict:
    """Per-pixel mean and std of the batch (the trainer's are the train split's)."""
    if not spec.input_size:
        return {}
    pixels = batch["clip" if spec.needs_clips else "image"].double()
    pixels = pixels.reshape(-1, *pixels.shape[-3:])
    return {"mean": pixels.mean(0).float().numpy(), "std": pixels.std(0).clamp_min(1.0).float().numpy()}


def loss_function(cfg: TrainConfig, labels: torch.Tensor, class_names) -> torch.nn.Module:
    if not cfg.class_weighted:
        return torch.nn.CrossEntropyLoss()
    counts = {"train": np.bincount(labels.numpy(), minlength=len(class_names)).tolist()}
    weights = data.DataInfo([], tuple(class_names), counts, (0, 0, 0)).class_weights("train")
    return torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))


@pytest.mark.parametrize("path", TRAIN_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_one_training_step_of_each_recipe(path, sample_rows):
    cfg = load(path)
    spec, class_names = get_spec(cfg.model), LABEL_SETS[cfg.resolved_label_set()]
    batch = model_batch(cfg, sample_rows[data.data_folder(cfg)])
    assert len(batch["label"]) >= 2, "the sample has rows of this recipe's label set"
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(class_names), **ckpt.architecture(cfg))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = loop.new_optimizer(model, cfg)
    batcher = Batcher(spec, batch_norm(batch, spec), torch.device("cpu"), spec.input_size or 100)
    autocast = {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": False}
    loss, labels = loop.train_step(model, optimizer, loss_function(cfg, batch["label"], class_names), batch,
                                   batcher, cfg, torch.Generator().manual_seed(cfg.seed), autocast)
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert labels.tolist() == batch["label"].tolist()
    changed = sum(not torch.equal(old, new.detach()) for old, new in zip(before, model.parameters()))
    assert changed >= len(before) // 2, f"the step moved {changed} of {len(before)} parameter tensors"
