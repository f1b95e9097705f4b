"""Face detectors chosen by name, one `detect(image) -> (boxes, scores)` contract.

boxes: float32 (N,4) x0,y0,x1,y1 in image pixels; scores: float32 (N,), on each
detector's own scale (not comparable across detectors). Faces whose shorter side
is under `min_face_size` are dropped; the rest are sorted by area, largest first.
Images may be grey (H,W) or RGB (H,W,3) uint8.
"""
from __future__ import annotations

import math

import cv2
import dlib
import numpy as np

from fer_ray.config import DETECTORS
from fer_ray.vision.boxes import keep_faces
from fer_ray.vision.tracking import distinct_faces
from fer_ray.weights import local_weights

# The configurable detectors that are objects: auto picks one of them, none skips detection.
DETECTOR_NAMES = tuple(name for name in DETECTORS if name not in ("auto", "none"))


def create_detector(name: str, model_path: str = "", min_face_size: int = 24, device: str = "cpu"):
    """A detector object by name; weights are loaded here, once. `device` is where the
    network detectors (sfd, blazeface) run."""
    if name in ("sfd", "blazeface"):
        from fer_ray.vision.torch_detect import BlazeFaceDetector, SfdDetector

        network = SfdDetector if name == "sfd" else BlazeFaceDetector
        return network(model_path, min_face_size, device)
    if name == "haar":
        return HaarDetector(min_face_size)
    if name == "dlib_hog":
        return DlibHogDetector(min_face_size)
    if name == "yunet":
        return YuNetDetector(model_path, min_face_size)
    raise ValueError(f"face.detector: {name!r} is not a detector; choose one of: "
                     f"{', '.join(DETECTOR_NAMES)} (or 'none' for images that are already faces)")


def detect_many(detector, images: list[np.ndarray], detect_side: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, scores) per image: batched where the detector can batch, else one by one.
    An image whose longer side is over `detect_side` (> 0) is searched shrunk to that side
    and its boxes are scaled back to its own pixels: a detector's cost grows with the pixels
    (Haar on a 4000x3000 photo takes about 20 times as long as at 1000 px)."""
    shrunk_images = [shrunk(image, detect_side) for image in images]
    searched = [image for image, _ in shrunk_images]
    found = detector.detect_many(searched) if hasattr(detector, "detect_many") else [
        detector.detect(image) for image in searched]
    return [(boxes if scale == 1.0 else (boxes / scale).astype(np.float32), scores)
            for (boxes, scores), (_, scale) in zip(found, shrunk_images)]


def detect_followed(detector, image: np.ndarray, detect_side: int = 0,
                    min_face_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A whole-frame search for a followed video (same contract as `detect`): where the
    detector offers a coarse search (`detect_coarse`), its candidates are each refined by a
    search near them (`detect_near`), the way the video's frames between two whole searches
    are searched anyway; about half the cost of the full search on a 640x360 frame. Else
    the detector's own whole search."""
    if not hasattr(detector, "detect_coarse"):
        return detect_many(detector, [image], detect_side)[0]
    searched, scale = shrunk(image, detect_side)
    return detect_near(detector, image, detector.detect_coarse(searched) / scale, min_face_size)


def shrunk(image: np.ndarray, detect_side: int) -> tuple[np.ndarray, float]:
    """The image to search (its longer side brought down to detect_side) and the factor."""
    scale = reduction(image, detect_side)
    if scale == 1.0:
        return image, scale
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


def reduction(image: np.ndarray, detect_side: int) -> float:
    """The factor (<= 1) that brings the image's longer side down to detect_side (0: none)."""
    side = max(image.shape[:2])
    return detect_side / side if 0 < detect_side < side else 1.0


# Where detect_near looks: a square window this many expected face sides wide around the
# expected face's centre (at 5 sampled frames a second a face rarely moves half its side
# between two), for faces this much smaller or larger than the expected one.
NEAR_WINDOW = 1.8
NEAR_BAND = (0.7, 1.4)
NEAR_SAME_FACE_IOU = 0.5  # two windows that found boxes overlapping this much found one face


def detect_near(detector, image: np.ndarray, expected: np.ndarray,
                min_face_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces near the expected boxes (N, 4) only: the detector runs on a window around each,
    scaled down where it declares a `near_side`, so a video's frames between two whole-frame
    detections cost a fraction of one. Same contract as `detect`: boxes in image pixels,
    largest first, one box per face where two windows overlap."""
    found_boxes, found_scores = [], []
    for box in np.asarray(expected, np.float32).reshape(-1, 4):
        boxes, scores = _detect_in_window(detector, image, box)
        found_boxes.append(boxes)
        found_scores.append(scores)
    if not found_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes, scores = np.concatenate(found_boxes), np.concatenate(found_scores)
    boxes, scores = _one_box_per_face(boxes, scores)
    return keep_faces(boxes, scores, min_face_size)


def _detect_in_window(detector, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    side = float(max(box[2] - box[0], box[3] - box[1]))
    centre_x, centre_y, reach = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, side * NEAR_WINDOW / 2
    height, width = image.shape[:2]
    x0, y0 = int(max(0, centre_x - reach)), int(max(0, centre_y - reach))
    x1, y1 = int(min(width, centre_x + reach)), int(min(height, centre_y + reach))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    window = image[y0:y1, x0:x1]
    near_side = getattr(detector, "near_side", 0)
    if not near_side:  # a detector that cannot narrow its search: the window alone saves the rest
        boxes, scores = detector.detect(np.ascontiguousarray(window))
        return boxes + np.array([x0, y0, x0, y0], np.float32), scores
    scale = min(1.0, near_side / side)
    if scale < 1.0:
        window = cv2.resize(window, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    band = (int(side * scale * NEAR_BAND[0]), int(math.ceil(side * scale * NEAR_BAND[1])))
    boxes, scores = detector.detect(window, sizes=band)
    return boxes / scale + np.array([x0, y0, x0, y0], np.float32), scores


def _one_box_per_face(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy: the best-scored box of each group of boxes overlapping NEAR_SAME_FACE_IOU or more."""
    order = np.argsort(-scores, kind="stable")
    kept = order[distinct_faces(boxes[order], NEAR_SAME_FACE_IOU)]
    return boxes[kept].astype(np.float32), scores[kept].astype(np.float32)


def full_image_box(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For datasets of face crops: the whole image is the one face, score 1.0."""
    height, width = image.shape[:2]
    return np.array([[0, 0, width, height]], np.float32), np.ones(1, np.float32)


class HaarDetector:
    """OpenCV's Viola-Jones frontal face cascade (seed 001's detector).

    Score = number of raw detections merged into the box (the cascade's own
    evidence count; more is surer).
    """
    name = "haar"

    def __init__(self, min_face_size: int = 24):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path} (opencv-python-headless < 5 "
                               "is needed: 5.x removed the cascades)")
        self.min_face_size = min_face_size

    # detect_near scales a region so its expected face is about this many pixels: the cascade's
    # 24 px window then needs few scales (about 5x cheaper than the whole 320x240 frame)
    near_side = 48

    def detect(self, image: np.ndarray, sizes: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`sizes` (smallest, largest side) narrows the search to faces of about a known size."""
        smallest, largest = sizes or (self.min_face_size, 0)
        boxes, neighbours = self._search(image, 1.1, 5, smallest, largest)
        return keep_faces(boxes, neighbours, 0 if sizes else self.min_face_size)

    def detect_coarse(self, image: np.ndarray) -> np.ndarray:
        """Candidate boxes (N, 4) from a cheap whole-image search, for detect_near to confirm:
        a coarser pyramid (steps of 1.25, not 1.1: about half the pixels searched) and fewer
        merged hits needed (2, not 5), so that a face between two of its scales is not missed
        for want of evidence (1.3, seed 001's step, lost a few more frames of the sample clips)."""
        return self._search(image, 1.25, 2, self.min_face_size, 0)[0]

    def _search(self, image: np.ndarray, step: float, hits: int, smallest: int,
                largest: int) -> tuple[np.ndarray, np.ndarray]:
        # Equalising first makes the cascade less sensitive to exposure.
        gray = cv2.equalizeHist(to_gray(image))
        rects, neighbours = self.cascade.detectMultiScale2(gray, scaleFactor=step, minNeighbors=hits,
                                                           minSize=(smallest, smallest), maxSize=(largest, largest))
        boxes = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x,y,w,h -> x0,y0,x1,y1
        return boxes, np.asarray(neighbours, np.float32).ravel()


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal face detector. Score = SVM margin.

    Its window is 80x80 px, so without upsampling it finds faces from about 80 px;
    each upsample halves that at 4x the cost (1 upsample: ~0.25 s on a 512x512
    image instead of ~0.06 s, and weak false positives appear). Default 0: the
    datasets that need detection (JAFFE, CK+, MPI, video) have large faces.
    """
    name = "dlib_hog"

    def __init__(self, min_face_size: int = 24, upsample: int = 0):
        self.detector = dlib.get_frontal_face_detector()
        self.min_face_size = min_face_size
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rects, scores, _ = self.detector.run(np.ascontiguousarray(image), self.upsample, 0.0)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                         np.float32).reshape(-1, 4)  # dlib's right/bottom are inclusive
        return keep_faces(boxes, np.asarray(scores, np.float32), self.min_face_size)


class YuNetDetector:
    """OpenCV's YuNet CNN (cv2.FaceDetectorYN); weights from face.detector_model.

    No YuNet model ships with any installed package, so the path or URI must be set.
    """
    name = "yunet"

    def __init__(self, model_path: str, min_face_size: int = 24, score_threshold: float = 0.7):
        if not model_path:
            raise FileNotFoundError("face.detector_model: required for detector 'yunet' "
                                    "(path or URI of face_detection_yunet_*.onnx)")
        path = local_weights(model_path, what="face.detector_model")
        self.model = cv2.FaceDetectorYN.create(path, "", (320, 320), score_threshold, 0.3, 5000)
        self.min_face_size = min_face_size

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bgr = to_bgr(image)
        self.model.setInputSize((bgr.shape[1], bgr.shape[0]))  # the network runs at image size
        _, rows = self.model.detect(bgr)
        rows = np.zeros((0, 15), np.float32) if rows is None else rows
        boxes = rows[:, :4].astype(np.float32).copy()
        boxes[:, 2:] += boxes[:, :2]
        return keep_faces(boxes, rows[:, 14].astype(np.float32), self.min_face_size)


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def to_bgr(image: np.ndarray) -> np.ndarray:
    code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR
    return cv2.cvtColor(image, code)
