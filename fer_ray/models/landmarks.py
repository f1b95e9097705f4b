"""Families that use 68-point landmarks: vgg_landmarks (seed 003), enm and landmark_mlp (seed 002)."""
from __future__ import annotations

import torch
from torch import nn

from fer_ray.face68 import N_VALUES
from fer_ray.models import features
from fer_ray.models.registry import ModelSpec, register_model


def _mlp(in_features: int, widths: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """Linear + ReLU per width, each followed by a dropout when `dropout` > 0."""
    layers = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout else [])
        in_features = width
    return nn.Sequential(*layers)


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 convolution, BatchNorm, ReLU. Without the BatchNorm, these from-scratch stacks of
    six or more ReLU layers predicted one class on the sample faces whatever the learning
    rate (tests/integration/test_families_learn.py: vgg_landmarks macro-F1 0.04-0.11, enm 0.04)."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)]


def _vgg_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*_conv(in_channels, out_channels), *_conv(out_channels, out_channels), nn.MaxPool2d(2))


class Standardise(nn.Module):
    """Each feature standardised: a BatchNorm (batch statistics in training, their running
    averages after), by default without scale or shift. A last training batch of one sample
    has no spread, so it uses the running statistics."""

    def __init__(self, features: int, affine: bool = False):
        super().__init__()
        self.norm = nn.BatchNorm1d(features, affine=affine)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.training and len(values) == 1:
            norm = self.norm
            return nn.functional.batch_norm(values, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                            eps=norm.eps)
        return self.norm(values)


class VggLandmarks(nn.Module):
    """Image branch (3 VGG blocks 32/64/128 on 48x48 -> Dense 64, 64) and landmark branch
    (MLP on normalised 68x2 points); their features are concatenated, then Dense 68 -> classes.
    The seed averaged two softmax outputs; fusing features lets each branch inform the other.

    Dropout once, on the fused features. With it after every hidden layer, as the other
    families' MLPs have it, four dropouts on 64-wide layers in a row kept the model from fitting
    even its training faces (tests/integration/test_families_learn.py: train macro-F1 0.39 and
    held-out 0.30 after 12 epochs at lr 1e-3).

    Its large first dense layer (4,608 inputs) is batch-normalised: without, the held-out
    macro-F1 after 8 epochs at lr 1e-3 ranged 0.11-0.94 with the order of the same training
    faces, and stayed near chance at lr 3e-3; with it, 0.99-1.00 over six orders, 0.55-0.83
    after 4 epochs at lr 3e-3."""

    def __init__(self, num_classes: int, dropout: float = 0.3):
        super().__init__()
        self.image_branch = nn.Sequential(
            _vgg_block(1, 32), _vgg_block(32, 64), _vgg_block(64, 128),  # 48 -> 6
            nn.Flatten(), nn.Linear(6 * 6 * 128, 64, bias=False), Standardise(64, affine=True),
            nn.ReLU(inplace=True), *_mlp(64, (64,)),
        )
        self.landmark_branch = _mlp(N_VALUES, (128, 64))
        self.head = nn.Sequential(nn.Dropout(dropout), _mlp(64 + 64, (68,)), nn.Linear(68, num_classes))

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        points = features.normalise_points(landmarks).flatten(1)
        fused = torch.cat([self.image_branch(image), self.landmark_branch(points)], dim=1)
        return self.head(fused)


class Enm(nn.Module):
    """Seed 002's ENM, multi-class. The face is masked inside forward() so callers pass the
    plain 100x100 crop and its landmarks; the mask follows the same landmarks the distances use."""

    def __init__(self, num_classes: int, dropout: float = 0.3, image_size: int = 100):
        super().__init__()
        self.image_size = image_size

        pool = nn.MaxPool2d(2)
        self.image_branch = nn.Sequential(
            *_conv(1, 32), *_conv(32, 64), pool, *_conv(64, 64), *_conv(64, 128), pool, *_conv(128, 128), pool,
            nn.Flatten(),  # 100 -> 50 -> 25 -> 12
        )
        image_features = (image_size // 8) ** 2 * 128
        self.standardise = Standardise(features.PAIRWISE_DIM)  # as landmark_mlp's distances
        self.head = nn.Sequential(
            _mlp(image_features + features.PAIRWISE_DIM, (256, 128, 64), dropout), nn.Linear(64, num_classes),
        )

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        masked = image * features.region_mask(landmarks, self.image_size)
        distances = self.standardise(features.pairwise_distances(landmarks))
        return self.head(torch.cat([self.image_branch(masked), distances], dim=1))


class LandmarkMlp(nn.Module):
    """Seed 002's landmarks-only model: the 51x51 pairwise distances, each standardised, -> MLP.

    Unlike the seed, every distance is standardised (a BatchNorm without scale or shift: batch
    statistics in training, their running averages after). Between expressions a distance moves
    by about a tenth of its own size (on the 48 px sample faces: mean 0.27, spread 0.025 after
    the seed's division by 60), so the raw features left the MLP predicting one class for every
    learning rate of the demo's sweep (validation macro-F1 0.03-0.05 after 3 epochs; 0.70-0.95
    standardised)."""

    def __init__(self, num_classes: int, dropout: float = 0.3):
        super().__init__()
        self.standardise = Standardise(features.PAIRWISE_DIM)
        self.mlp = nn.Sequential(_mlp(features.PAIRWISE_DIM, (256, 128, 64), dropout), nn.Linear(64, num_classes))

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.standardise(features.pairwise_distances(landmarks)))


register_model("vgg_landmarks", ModelSpec(
    name="vgg_landmarks", input_size=48, channels=1, needs_landmarks=True,
    label_set="basic7", builder=VggLandmarks,
    description="Seed 003's VGG image branch fused with a landmark MLP at feature level.",
))
register_model("enm", ModelSpec(
    name="enm", input_size=100, channels=1, needs_landmarks=True,
    label_set="canonical8", builder=Enm,
    description="Seed 002's ENM: landmark-masked 100x100 face CNN + 51x51 distances, multi-class.",
))
register_model("landmark_mlp", ModelSpec(
    name="landmark_mlp", input_size=0, channels=0, needs_landmarks=True,
    label_set="canonical8", builder=LandmarkMlp,
    description="Seed 002's landmarks-only MLP on the 51x51 pairwise distances, each standardised.",
))
