"""Training-time augmentation of face crops and their 68 landmarks, on the worker's device.

Batches are float tensors: `images` (B, C, H, W) with values in 0..255 and `landmarks`
(B, 68, 2) as (x, y) in crop pixels, dlib/iBUG order. Every geometric change applied to an
image is applied to its landmarks too, so a landmark stays on the same facial feature.
Clips (B, T, C, H, W) are augmented with their frames folded into the channels, so the
T frames of a clip get one draw: the same flip, rotation, shift, brightness and contrast
(a face that jumped or flickered between frames would be motion the video never had).

Pixel convention: pixel i covers coordinate i (its centre), so a crop of side W spans
0..W-1 and its centre is (W-1)/2. `grid_sample(align_corners=True)` uses the same
convention: normalised -1 and +1 are the centres of the first and last pixels, i.e.
n = 2*x/(W-1) - 1. Landmark and image transforms are both written in these terms.

Everything is vectorised over the batch (no loop over samples); random numbers are drawn
on the generator's device (CPU by default) and moved to the data's device, so the same
seed gives the same transforms on CPU and CUDA. Augmentation is for training only: the
caller skips it at evaluation (or passes strength 0).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fer_ray.face68 import MIRROR

# Maxima at strength 1; each scales linearly with strength.
MAX_ROTATION_DEG = 10.0
MAX_SHIFT_FRACTION = 0.05  # of the crop side, in x and in y
MAX_BRIGHTNESS = 20.0  # grey levels added (of 255)
MAX_CONTRAST = 0.2  # deviation from the per-image mean is scaled by 1 +- this


def flip_horizontal(images: Tensor | None, landmarks: Tensor | None,
                    width: int | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Mirror every sample left-right: x' = (width-1) - x, landmarks re-indexed by face68.MIRROR.

    `width` is the crop side the landmarks live in; it defaults to the images' width and
    is required when only landmarks are given.
    """
    if images is not None:
        if width is not None and width != images.shape[-1]:
            raise ValueError(f"width {width} does not match the images' width {images.shape[-1]}")
        width = images.shape[-1]
        images = images.flip(-1)
    if landmarks is not None:
        if width is None:
            raise ValueError("flip_horizontal needs width when only landmarks are given")
        landmarks = _mirror_landmarks(landmarks, width)
    return images, landmarks


def _mirror_landmarks(landmarks: Tensor, width: int) -> Tensor:
    index = torch.tensor(MIRROR, device=landmarks.device)
    mirrored = landmarks.index_select(-2, index)
    return torch.stack(((width - 1) - mirrored[..., 0], mirrored[..., 1]), dim=-1)


def augmenter(strength: float, generator: torch.Generator, size: int):
    """augment() with a run's strength, generator and crop side, as Batcher.inputs takes
    it; None when augmentation is off."""
    return functools.partial(augment, strength=strength, generator=generator, size=size) if strength > 0 else None


def augment(images: Tensor | None, landmarks: Tensor | None, strength: float,
            generator: torch.Generator | None = None,
            size: int | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Random per-sample flip, rotation, shift (images and landmarks alike) and brightness/
    contrast (images only), scaled by `strength`; 0 returns the inputs themselves.

    At strength s: flip with probability 0.5, rotation about the crop centre uniform in
    +-10*s degrees, shift uniform in +-0.05*s of the side in x and y, brightness +-20*s grey
    levels, contrast factor in [1-0.2s, 1+0.2s]; images are then clamped to [0, 255].
    `size` is the crop side for landmark geometry when `images` is None.
    The inputs are not modified.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    if strength == 0 or (images is None and landmarks is None):
        return images, landmarks
    if images is not None and images.dim() == 5:
        return augment_clips(images, landmarks, strength, generator)
    batch, height, width = _batch_geometry(images, landmarks, size)
    # One draw per sample whether or not images are present, so a seed gives the same
    # geometry to a landmark-only model as to an image model.
    draws = torch.rand(batch, 6, generator=generator,
                       device=generator.device if generator is not None else "cpu")
    device = (images if images is not None else landmarks).device
    draws = draws.to(device)
    flip = draws[:, 0] < 0.5
    sym = 2 * draws[:, 1:] - 1  # uniform in [-1, 1]
    angle = sym[:, 0] * math.radians(MAX_ROTATION_DEG * strength)
    shift = sym[:, 1:3] * (MAX_SHIFT_FRACTION * strength) * torch.tensor(
        [width, height], device=device, dtype=sym.dtype)
    if landmarks is not None:
        landmarks = _transform_landmarks(landmarks, flip, angle, shift, width, height)
    if images is not None:
        images = _warp_images(images, flip, angle, shift)
        images = _photometric(images, brightness=sym[:, 3] * (MAX_BRIGHTNESS * strength),
                              contrast=1 + sym[:, 4] * (MAX_CONTRAST * strength))
    return images, landmarks


def augment_clips(clips: Tensor, landmarks: Tensor | None, strength: float,
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
    """augment() of clips (B, T, C, H, W): T folded into the channels, one draw per clip.
    The contrast pivot is then the mean of the whole clip, the same for all its frames."""
    if landmarks is not None:
        raise ValueError("augment: clips are augmented without landmarks (no clip family takes them)")
    batch, frames, channels, height, width = clips.shape
    folded, _ = augment(clips.reshape(batch, frames * channels, height, width), None, strength, generator)
    return folded.reshape(batch, frames, channels, height, width), None


def _batch_geometry(images: Tensor | None, landmarks: Tensor | None,
                    size: int | None) -> tuple[int, int, int]:
    """(batch, height, width), checking that images and landmarks agree."""
    if images is not None:
        batch, _, height, width = images.shape
        if landmarks is not None and landmarks.shape[0] != batch:
            raise ValueError(f"{batch} images but {landmarks.shape[0]} landmark sets")
        return batch, height, width
    if size is None:
        raise ValueError("augment needs size (the crop side) when images is None")
    return landmarks.shape[0], size, size


def _rotation(angle: Tensor) -> Tensor:
    """(B, 2, 2) rotation matrices acting on (x, y) column vectors."""
    cos, sin = angle.cos(), angle.sin()
    return torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)


def _transform_landmarks(landmarks: Tensor, flip: Tensor, angle: Tensor, shift: Tensor,
                         width: int, height: int) -> Tensor:
    """Forward map in pixels: p' = R (p - c) + c + shift, after the optional mirror."""
    landmarks = torch.where(flip[:, None, None], _mirror_landmarks(landmarks, width), landmarks)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2],
                          device=landmarks.device, dtype=landmarks.dtype)
    rotation = _rotation(angle).to(landmarks.dtype)
    moved = torch.einsum("bij,bnj->bni", rotation, landmarks - centre)
    return moved + centre + shift[:, None, :].to(landmarks.dtype)


def _warp_images(images: Tensor, flip: Tensor, angle: Tensor, shift: Tensor) -> Tensor:
    """Mirror then rotate/shift images, the same map as `_transform_landmarks`.

    grid_sample needs the inverse map (output pixel -> where to sample the input), in
    normalised coordinates n = S^-1 (p - c) with S = diag((W-1)/2, (H-1)/2):
    n_in = S^-1 R^T S n_out - S^-1 R^T shift.

    padding_mode="border": at up to 10 degrees and 5% shift only thin edge wedges come from
    outside the crop; repeating the edge pixels keeps them face-like, whereas zeros would
    add black corners and straight edges that never occur in evaluation crops (a cue a
    network could learn) and would pull down the per-image mean used for contrast.
    """
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    _, _, height, width = images.shape
    half = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=images.device,
                        dtype=images.dtype)
    inverse = _rotation(angle).to(images.dtype).transpose(1, 2)  # R^T
    linear = inverse * half[None, None, :] / half[None, :, None]  # S^-1 R^T S
    offset = -torch.einsum("bij,bj->bi", inverse, shift.to(images.dtype)) / half
    theta = torch.cat((linear, offset[:, :, None]), dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


def _photometric(images: Tensor, brightness: Tensor, contrast: Tensor) -> Tensor:
    """Scale each image's deviation from its mean (all channels, so colours keep their
    balance) by `contrast`, add `brightness`, and clamp to the valid 0..255 range."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = contrast.clamp(min=0).to(images.dtype)[:, None, None, None]
    out = (images - mean) * contrast + mean + brightness.to(images.dtype)[:, None, None, None]
    return out.clamp(0, 255)
