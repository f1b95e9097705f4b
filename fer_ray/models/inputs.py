"""What a model is fed: a batch of face rows turned into its positional inputs.

Shared by the training loop and the classify stage, so a model sees the same inputs in
training and in inference; nothing here imports Ray Train.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# (images, landmarks) -> (images, landmarks): the training loop's augmentation
Transform = Callable[[torch.Tensor | None, torch.Tensor | None], tuple]


class Batcher:
    """Turns a Ray Data torch batch into the model's positional inputs, on the device.

    Images arrive as uint8 (B, C, H, W), clips (clip families) as uint8 (B, T, C, H, W);
    the training loop's augmentation (if any) works in pixel units (one transform per clip,
    for all its frames), then they are standardised with the train split's per-pixel mean
    and std (C, H, W), which broadcast over the frames of a clip alike.
    """

    def __init__(self, spec, norm: dict, device: torch.device, face_side: int):
        self.spec, self.device, self.face_side = spec, device, face_side
        self.pixels = "clip" if spec.needs_clips else "image"
        self.mean = torch.as_tensor(np.asarray(norm["mean"], np.float32), device=device) if norm else None
        self.std = torch.as_tensor(np.asarray(norm["std"], np.float32), device=device) if norm else None

    def inputs(self, batch: dict, augment: Transform | None = None) -> tuple:
        images = batch[self.pixels].to(self.device, torch.float32) if self.spec.input_size else None
        landmarks = batch["landmarks"].to(self.device, torch.float32) if self.spec.needs_landmarks else None
        if augment is not None:
            images, landmarks = augment(images, landmarks)
        named = {self.pixels: None if images is None else (images - self.mean) / self.std, "landmarks": landmarks}
        return tuple(named[name] for name in self.spec.input_names)
