"""Clip models of seed 001: input (B, T=12, 1, 48, 48), batch-first, frames on dim 1."""
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
    padding = tuple(k // 2 for k in kernel)  # 'same' padding, so only the pools shrink the clip
    return [nn.Conv3d(a, b, kernel, padding=padding), nn.ReLU(inplace=True)]


class C3d(nn.Module):
    """Seed 001's C3D on (T=12, 48, 48): (T, H, W) 12x48x48 -> 12x24x24 -> 6x12x12 -> 3x6x6
    -> 1x3x3 -> 1x1x1 x 512 -> FC fc_size -> FC fc_size -> classes."""

    def __init__(self, num_classes: int, fc_size: int = 4096, dropout: float = 0.5):
        super().__init__()
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
            nn.Linear(512, fc_size), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_size, fc_size), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_size, num_classes),
        )

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clip.transpose(1, 2)))  # (B, T, C, H, W) -> (B, C, T, H, W)


register_model("cnn_lstm", ModelSpec(
    name="cnn_lstm", input_size=48, channels=1, needs_clips=True,
    clip_length=CLIP_LENGTH, label_set="basic7", builder=CnnLstm,
    description="Per-frame dexpression_fer trunk, Dense 128, LSTM 128 over 12-frame clips.",
))
register_model("c3d", ModelSpec(
    name="c3d", input_size=48, channels=1, needs_clips=True,
    clip_length=CLIP_LENGTH, label_set="basic7", builder=C3d,
    description="3D-conv network on 12-frame 48x48 clips; fc_size (default 4096) is configurable.",
))
