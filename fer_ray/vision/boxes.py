"""What every face detector and FAN share: the box filter and order, and the RGB view.

Numpy only; `detect` (classic detectors), `torch_detect` (network detectors) and `fan`
import it, so none of them imports another for these.
"""
from __future__ import annotations

import numpy as np


def keep_faces(boxes: np.ndarray, scores: np.ndarray, min_face_size: int):
    """Drop boxes whose shorter side is under min_face_size; sort by area, largest first."""
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    keep = sides >= min_face_size
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-box_areas(boxes), kind="stable")
    return boxes[order], scores[order]


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """RGB as is; grey repeated into three channels (what the network detectors and FAN take)."""
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
