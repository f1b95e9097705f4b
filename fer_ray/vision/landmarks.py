"""68-point facial landmarks (iBUG 300-W layout) inside detected face boxes.

Point groups: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47 (36-41 on the image
left), mouth 48-67.
"""
from __future__ import annotations

import math

import cv2
import dlib
import numpy as np

from fer_ray.config import LANDMARKERS
from fer_ray.face68 import N_POINTS
from fer_ray.weights import dlib_predictor_path, local_weights

MIN_SIDE = 160  # faces smaller than this (px) are upscaled before prediction


def create_landmarker(name: str, model_path: str = "", device: str = "cpu", precision: str = "fp32",
                      flip_input: bool = False):
    """A landmarker by name; `device`, `precision` and `flip_input` concern FAN only."""
    if name == "dlib":
        return DlibLandmarker(model_path)
    if name in ("fan", "fan3d"):
        from fer_ray.vision.fan import FanLandmarker

        return FanLandmarker(name, model_path, device, precision, flip_input)
    raise ValueError(f"face.landmarker: {name!r} is not valid; choose one of: "
                     f"{', '.join(LANDMARKERS)}")


def landmarks_many(landmarker, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
    """(n_i,68,2) points per image: one batch where the landmarker can batch (FAN)."""
    if hasattr(landmarker, "predict_many"):
        return landmarker.predict_many(images, boxes)
    return [landmarker(image, image_boxes) for image, image_boxes in zip(images, boxes)]


class DlibLandmarker:
    """dlib's ensemble-of-regression-trees 68-point predictor, loaded once per object.

    model_path: a path or URI (face.landmark_model); default: the model in the
    face-recognition-models package.
    """
    name = "dlib"

    def __init__(self, model_path: str = ""):
        path = local_weights(model_path, what="face.landmark_model") if model_path \
            else dlib_predictor_path()
        self.predictor = dlib.shape_predictor(path)

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N,68,2) float32 x,y in image pixels for N boxes (x0,y0,x1,y1)."""
        image = np.ascontiguousarray(image)  # dlib needs C-contiguous grey or RGB uint8
        points = [self._predict(image, box) for box in np.asarray(boxes, np.float64).reshape(-1, 4)]
        return np.asarray(points, np.float32).reshape(-1, N_POINTS, 2)

    def _predict(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Landmarks for one box, upscaling a small face first.

        dlib returns whole-pixel points; on a 48 px face that rounding is a visible
        part of the error (0.3 px vs 0.18 px mean error against the same face seen at
        high resolution), so faces under MIN_SIDE are predicted on an upscaled patch
        and mapped back, which gives sub-pixel points.
        """
        scale = max(1, math.ceil(MIN_SIDE / max(min(box[2] - box[0], box[3] - box[1]), 1.0)))
        if scale == 1:
            return self._predict_whole_pixels(image, box)
        patch, origin = _upscaled_patch(image, box, scale)
        points = self._predict_whole_pixels(patch, (box - np.tile(origin, 2)) * scale)
        return (points + 0.5) / scale - 0.5 + origin  # cv2.resize keeps pixel centres aligned

    def _predict_whole_pixels(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self.predictor(image, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))  # inclusive corners
        return points_array(shape)


# dlib's points print as "points[(x, y), (x, y), ...]": parsing that text is about 3x faster
# than reading 68 point objects one by one through pybind (30 us vs 100 us per face).
_POINT_PUNCTUATION = str.maketrans("(),[]", "     ")


def points_array(shape) -> np.ndarray:
    """A dlib full_object_detection's points as an (N, 2) float64 array."""
    text = str(shape.parts())
    return np.array(text[len("points"):].translate(_POINT_PUNCTUATION).split(), np.float64).reshape(-1, 2)


def _upscaled_patch(image: np.ndarray, box: np.ndarray,
                    scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The box plus half its size on each side (the shape may leave the box), clipped to
    the image and upscaled; also the patch's top-left corner in image pixels."""
    height, width = image.shape[:2]
    margin = 0.5 * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = (max(int(box[i] - margin), 0) for i in (0, 1))
    x1, y1 = min(int(box[2] + margin) + 1, width), min(int(box[3] + margin) + 1, height)
    patch = cv2.resize(image[y0:y1, x0:x1], ((x1 - x0) * scale, (y1 - y0) * scale),
                       interpolation=cv2.INTER_LINEAR)
    return patch, np.array([x0, y0], np.float64)
