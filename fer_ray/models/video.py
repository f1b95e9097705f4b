"""Clip models of seed 001: input (B, T, 1, 48, 48), batch-first, frames on dim 1.

T is the clip length of the training data (12 in the seed's recipe, 16 by default in
preprocessing); the checkpoint records it, so a model is rebuilt for the T it was trained on.
"""
from __future__ import annotations

import torch
from torch import nn

from fer_ray.models.dexpression import DEXPRESSION_FER_FLAT, dexpression_fer_trunk
from fer_ray.models.registry import ModelSpec, register_model

CLIP_LENGTH = 12


class CnnLstm(nn.Module):
    """dexpression_fer trunk per frame -> Dense 128 -> LSTM 128 -> classes from the last step."""

    def __init__(self, num_classes: int, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.trunk = dexpression_fer_trunk()
        self.frame_head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(DEXPRESSION_FER_FLAT, 128),
                                        nn.ReLU(inplace=True))
        self.lstm = nn.LSTM(128, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        batch, frames = clip.shape[:2]
        per_frame = self.frame_head(self.trunk(clip.flatten(0, 1)))  # frames folded into the batch
        sequence, _ = self.lstm(per_frame.view(batch, frames, -1))
        return self.head(sequence[:, -1])


def _conv3d(a: int, b: int, kernel) -> list[nn.Module]:
    """Convolution, BatchNorm, ReLU ('same' padding, so only the pools shrink the clip). The
    seed's C3D had no normalisation; on the synthetic clips it then learned in some runs only
    (held-out macro-F1 0.24 and 0.37 for seeds 0 and 1 after 3 epochs, 0.61-0.72 for seeds
    0-2 with BatchNorm), as enm and vgg_landmarks had predicted one class without it."""
    padding = tuple(k // 2 for k in kernel)
    return [nn.Conv3d(a, b, kernel, padding=padding, bias=False), nn.BatchNorm3d(b), nn.ReLU(inplace=True)]


MIN_C3D_FRAMES = 8  # three temporal pools of 2


def c3d_flat_size(clip_length: int) -> int:
    """Features entering C3d's head: 512 channels x the frames left after three temporal
    pools of 2 (floor, as MaxPool3d does); the 48 px side always ends at 1x1."""
    if clip_length < MIN_C3D_FRAMES:
        raise ValueError(f"c3d: clip_length {clip_length} is too short; it needs at least {MIN_C3D_FRAMES} frames "
                         "(three temporal poolings of 2)")
    return 512 * (clip_length // 2 // 2 // 2)


class C3d(nn.Module):
    """Seed 001's C3D on (T, 48, 48); for the seed's T=12: (T, H, W) 12x48x48 -> 12x24x24 ->
    6x12x12 -> 3x6x6 -> 1x3x3 -> 1x1x1 x 512 -> FC fc_size -> FC fc_size -> classes.

    The pools are the seed's; the first FC layer takes what they leave of clip_length frames
    (T=16 leaves 2 x 512), so the weights are those of one clip length, which the checkpoint
    records and loading rebuilds.
    """

    def __init__(self, num_classes: int, fc_size: int = 4096, dropout: float = 0.5, clip_length: int = CLIP_LENGTH):
        super().__init__()
        self.clip_length = clip_length
        k133, k111, k333 = (1, 3, 3), (1, 1, 1), (3, 3, 3)
        self.features = nn.Sequential(
            *_conv3d(1, 64, k133), nn.MaxPool3d((1, 2, 2)),
            *_conv3d(64, 128, k133), nn.MaxPool3d(2),
            *_conv3d(128, 128, k111), *_conv3d(128, 256, k111), nn.MaxPool3d(2),
            *_conv3d(256, 256, k333), *_conv3d(256, 512, k333), nn.MaxPool3d(2),
            *_conv3d(512, 512, k333), *_conv3d(512, 512, k333), nn.MaxPool3d((1, 2, 2)),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3d_flat_size(clip_length), fc_size), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_size, fc_size), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_size, num_classes),
        )
        self._he_init()

    def _he_init(self) -> None:
        """He (Kaiming) normal weights, zero biases. Under PyTorch's default init the ReLU
        layers start with shrinking activations; before the convolutions had BatchNorm, that
        left the model at chance for epochs where this init learned (the seed's Keras model
        used Glorot's, which has the same problem less so)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.shape[1] != self.clip_length:
            raise ValueError(f"c3d: built for {self.clip_length}-frame clips, given {clip.shape[1]} frames")
        return self.head(self.features(clip.transpose(1, 2)))  # (B, T, C, H, W) -> (B, C, T, H, W)


register_model("cnn_lstm", ModelSpec(
    name="cnn_lstm", input_size=48, channels=1, needs_clips=True,
    clip_length=CLIP_LENGTH, min_clip_length=1, label_set="basic7", builder=CnnLstm,
    description="Per-frame dexpression_fer trunk, Dense 128, LSTM 128 over clips of any length (seed: 12 frames).",
))
register_model("c3d", ModelSpec(
    name="c3d", input_size=48, channels=1, needs_clips=True,
    clip_length=CLIP_LENGTH, min_clip_length=MIN_C3D_FRAMES, label_set="basic7", builder=C3d,
    # At 1e-3 AdamW's first steps move every weight of its 4096-wide layers at once: on the
    # sample clips the loss climbed from 7 to 30 and the validation loss to hundreds.
    default_lr=1e-4,
    description="3D-conv network on 48x48 clips of >= 8 frames (seed: 12); fc_size (default 4096) is configurable.",
))
