"""The classify stage: a trained checkpoint applied to batches of aligned faces.

Inference is a stage like the face stage, used by evaluate and predict; it loads only
the checkpoint and its model (no Ray Train in the actor).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import ray.data
import torch

from fer_ray.face68 import N_POINTS
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import get_spec
from fer_ray.models.inputs import Batcher
from fer_ray.runtime import actor_pool_size
from fer_ray.schema import face_array
from fer_ray.stages.base import Stage, apply_stage


@dataclass(frozen=True)
class ClassifySettings:
    """What a classify actor is built from: the checkpoint, and the device its model runs on
    ("cuda" in an actor given a GPU share). `prepare` (rows -> the 'image' and 'landmarks'
    arrays and the rest) and `finish` (classified batch -> output rows), when given, run in the
    actor around each forward pass: a pipeline's light conversions then need no Ray tasks of
    their own (each task-based step costs scheduling and an object-store round trip per block)."""
    checkpoint: str
    device: str = "cpu"
    prepare: Callable[[dict], dict] | None = None
    finish: Callable[[dict], Any] | None = None


MODEL_INPUTS = ("image", "clip", "landmarks")


class ClassifyStage(Stage):
    """'image' uint8 (B, C, H, W) or 'clip' (B, T, C, H, W), and 'landmarks' (B, 68, 2) ->
    'probabilities' (B, K) and 'prediction'.

    Loads the checkpoint once per actor; one forward pass per batch, standardised with
    the normalisation stored in the checkpoint, in float32 on any device. Images and weights
    are laid out channels-last: oneDNN's convolutions on a CPU run several times faster so
    (mini_xception's depthwise ones 3.8x on 2 cores, bench/classify.py), same results to 1e-6.
    """
    is_actor = True
    num_cpus = 1.0
    batch_size = 128

    def __init__(self, cfg: ClassifySettings):
        super().__init__(cfg)
        state = ckpt.load(cfg.checkpoint)
        device = torch.device(cfg.device)
        model = ckpt.build_model(state)
        # channels-last is a 4-D layout: a model with 3-D convolutions (c3d) keeps its own
        layout = torch.channels_last if all(p.dim() != 5 for p in model.parameters()) else torch.contiguous_format
        self.model = model.to(device, memory_format=layout)
        spec = get_spec(state["model_name"])
        norm = {key: value.numpy() for key, value in state["norm"].items()}
        self.batcher = Batcher(spec, norm, device, spec.input_size or 100)

    def __call__(self, batch: dict):
        if self.cfg.prepare is not None:
            batch = self.cfg.prepare(batch)
        out = self.classified(batch)
        return out if self.cfg.finish is None else self.cfg.finish(out)

    @torch.no_grad()
    def classified(self, batch: dict) -> dict:
        with warnings.catch_warnings():
            # Arrow's arrays are read-only; nothing writes to these tensors (the batcher makes
            # float copies), so torch's warning about it would only fill the run's log.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = {key: torch.from_numpy(np.asarray(batch[key])) for key in MODEL_INPUTS if key in batch}
        inputs = (channels_last(value) for value in self.batcher.inputs(tensors))
        logits = self.model(*inputs).float()
        probabilities = torch.softmax(logits, dim=1).cpu().numpy()
        out = {key: value for key, value in batch.items() if key not in MODEL_INPUTS}
        return {**out, "probabilities": probabilities, "prediction": probabilities.argmax(1)}


def classifier_arrays(faces, shapes, is_face, landmarks, face_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Face-stage columns -> ClassifyStage's 'image' (B, C, H, W) uint8 and 'landmarks' (B, 68, 2).
    Rows without a face carry a blank crop of face_shape (h, w, c): they are classified with
    the rest, and their probabilities are for the caller to ignore."""
    blank = np.zeros(face_shape, np.uint8)
    images = np.stack([face_array(face, shape).reshape(face_shape) if found else blank
                       for face, shape, found in zip(faces, shapes, is_face)])
    points = np.stack([np.asarray(flat, np.float32) for flat in landmarks]).reshape(-1, N_POINTS, 2)
    return {"image": np.ascontiguousarray(images.transpose(0, 3, 1, 2)), "landmarks": points}


def channels_last(value: torch.Tensor | None) -> torch.Tensor | None:
    """An image batch (B, C, H, W) in channels-last layout; other inputs as they are."""
    return value.contiguous(memory_format=torch.channels_last) if value is not None and value.dim() == 4 else value


def classify(ds: ray.data.Dataset, checkpoint_uri: str, workers: int = 0,
             num_cpus: float | None = None, num_gpus: float = 0.0, batch_size: int | None = None,
             prepare: Callable[[dict], dict] | None = None, finish: Callable[[dict], Any] | None = None,
             whole_blocks: bool = False) -> ray.data.Dataset:
    """workers=0: one actor per CPU but one (Ray Data lists Parquet files with a whole-CPU
    task, which a pool holding every CPU would starve forever), or with num_gpus > 0 as many
    as the GPUs hold, each holding that share of a GPU and running its model there.
    `prepare` and `finish` as in ClassifySettings; whole_blocks: each block is one batch
    (`batch_size` is ignored), for rows that must be seen together."""
    settings = ClassifySettings(checkpoint_uri, "cuda" if num_gpus > 0 else "cpu", prepare, finish)
    return apply_stage(ds, ClassifyStage, settings, workers=actor_pool_size(workers, num_gpus, reserved_cpus=1),
                       num_cpus=num_cpus, num_gpus=num_gpus, batch_size=batch_size, whole_blocks=whole_blocks)
