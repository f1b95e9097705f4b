"""Landmark features shared by the landmark families, batch-first and vectorised.

Input everywhere: landmarks (B, 68, 2) float, (x, y) in crop pixels, dlib's 68-point order.
"""
from __future__ import annotations

import torch

from fer_ray.face68 import BROWS, EYES, MOUTH, N_POINTS, NON_JAW, NOSE

# enm and landmark_mlp drop the jaw (they use NON_JAW): it moves with pose, not expression.
NUM_NON_JAW = len(range(N_POINTS)[NON_JAW])  # 51
PAIRWISE_DIM = NUM_NON_JAW * NUM_NON_JAW  # the full 51x51 matrix, flattened, as the seed used
DISTANCE_SCALE = 60.0  # seed 002 divided distances by 60 (crop pixels of a 100 px face)

# Half side (px) of the square kept around each non-jaw point in enm's masked face.
_REGION_HALF_SIZES = [half for group, half in ((BROWS, 5), (NOSE, 12), (EYES, 9), (MOUTH, 9))
                      for _ in range(N_POINTS)[group]]


def normalise_points(landmarks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, 68, 2) centred on their mean and divided by their RMS distance from it.

    Makes the shape feature independent of where the face sits and how big it is.
    """
    centred = landmarks - landmarks.mean(dim=1, keepdim=True)
    spread = centred.pow(2).sum(dim=-1).mean(dim=1).sqrt()
    return centred / (spread[:, None, None] + eps)


def pairwise_distances(landmarks: torch.Tensor, scale: float = DISTANCE_SCALE) -> torch.Tensor:
    """(B, 51*51): all distances between the 51 non-jaw points, divided by `scale`.

    Row-major flattening of the symmetric matrix; its diagonal is 0. The sqrt is taken
    of a clamped square so the gradient at the zero diagonal stays finite.
    """
    points = landmarks[:, NON_JAW]
    diff = points[:, :, None, :] - points[:, None, :, :]
    squared = diff.pow(2).sum(dim=-1)
    distances = torch.where(squared > 0, squared.clamp_min(1e-12).sqrt(), torch.zeros_like(squared))
    return distances.flatten(1) / scale


def region_mask(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, size, size) float mask: 1 inside the squares around the non-jaw points.

    Pixel (row, col) is kept when |col - x| <= half and |row - y| <= half for any point.
    """
    points = landmarks[:, NON_JAW].detach()
    half = torch.tensor(_REGION_HALF_SIZES, dtype=points.dtype, device=points.device)
    grid = torch.arange(size, dtype=points.dtype, device=points.device)
    in_x = (grid[None, None, :] - points[..., 0:1]).abs() <= half[None, :, None]  # (B, 51, W)
    in_y = (grid[None, None, :] - points[..., 1:2]).abs() <= half[None, :, None]  # (B, 51, H)
    inside = (in_y[:, :, :, None] & in_x[:, :, None, :]).any(dim=1)  # (B, H, W)
    return inside[:, None].to(landmarks.dtype)
