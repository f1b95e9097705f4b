"""DeXpression (arXiv 1509.05371) and seed 001's reduced 48x48 version."""
from __future__ import annotations

import torch
from torch import nn

from fer_ray.models.registry import ModelSpec, register_model

FEATEX_CHANNELS = 208 + 64


class FeatEx(nn.Module):
    """Two parallel paths concatenated on channels: [1x1 96 -> 3x3 208] and [3x3 maxpool s1 -> 1x1 64].

    padding=0 is the seed's valid version (each block shrinks the map by 2);
    padding=1 is the paper's, which keeps the size.
    """

    def __init__(self, in_channels: int, padding: int):
        super().__init__()
        self.conv_path = nn.Sequential(
            nn.Conv2d(in_channels, 96, 1), nn.ReLU(inplace=True),
            nn.Conv2d(96, 208, 3, padding=padding), nn.ReLU(inplace=True),
        )
        self.pool_path = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=padding),
            nn.Conv2d(in_channels, 64, 1), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv_path(x), self.pool_path(x)], dim=1)


def dexpression_fer_trunk() -> nn.Sequential:
    """48x48x1 -> 6x6x272 feature map (valid padding throughout); shared with cnn_lstm."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, stride=2), nn.ReLU(inplace=True),  # 48 -> 21
        nn.MaxPool2d(3, stride=2),  # 21 -> 10
        nn.BatchNorm2d(64),
        FeatEx(64, padding=0),  # 10 -> 8
        FeatEx(FEATEX_CHANNELS, padding=0),  # 8 -> 6
    )


DEXPRESSION_FER_FLAT = 6 * 6 * FEATEX_CHANNELS


class DexpressionFer(nn.Module):
    def __init__(self, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.trunk = dexpression_fer_trunk()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(DEXPRESSION_FER_FLAT, num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(image))


class Dexpression(nn.Module):
    """Paper version at 224x224x1; BatchNorm stands in for LRN (same role, trains better).

    A second BatchNorm, not in the paper, scales the last FeatEx's features for the 53,312-wide
    classifier: without it the held-out macro-F1 after 2 epochs at lr 1e-3 ranged 0.27-0.57 with
    the order of the same training faces; with it, 0.57-0.69 (tests/integration/test_families_learn.py)."""

    def __init__(self, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 7, stride=2, padding=3), nn.ReLU(inplace=True),  # 224 -> 112
            nn.MaxPool2d(3, stride=2, padding=1),  # -> 56
            nn.BatchNorm2d(64),
            FeatEx(64, padding=1), nn.MaxPool2d(3, stride=2, padding=1),  # -> 28
            FeatEx(FEATEX_CHANNELS, padding=1), nn.MaxPool2d(3, stride=2, padding=1),  # -> 14
            nn.BatchNorm2d(FEATEX_CHANNELS),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(14 * 14 * FEATEX_CHANNELS, num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


register_model("dexpression_fer", ModelSpec(
    name="dexpression_fer", input_size=48, channels=1,
    label_set="basic7", builder=DexpressionFer,
    description="Seed 001's reduced DeXpression on 48x48 grey faces (~486k parameters).",
))
register_model("dexpression", ModelSpec(
    name="dexpression", input_size=224, channels=1,
    label_set="canonical8", builder=Dexpression,
    description="DeXpression paper network on 224x224 grey faces, BatchNorm for LRN.",
))
