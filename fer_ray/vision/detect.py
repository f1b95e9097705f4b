"""Face detectors chosen by name, one `detect(image) -> (boxes, scores)` contract.

boxes: float32 (N,4) x0,y0,x1,y1 in image pixels; scores: float32 (N,), on each
detector's own scale (not comparable across detectors). Faces whose shorter side
is under `min_face_size` are dropped; the rest are sorted by area, largest first.
Images may be grey (H,W) or RGB (H,W,3) uint8.
"""
from __future__ import annotations

import cv2
import dlib
import numpy as np

from fer_ray.config import DETECTORS
from fer_ray.vision.boxes import keep_faces
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


def detect_many(detector, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, scores) per image: batched where the detector can batch, else one by one."""
    if hasattr(detector, "detect_many"):
        return detector.detect_many(images)
    return [detector.detect(image) for image in images]


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

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Equalising first makes the cascade less sensitive to exposure.
        gray = cv2.equalizeHist(to_gray(image))
        size = (self.min_face_size, self.min_face_size)
        rects, neighbours = self.cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=size)
        boxes = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x,y,w,h -> x0,y0,x1,y1
        return keep_faces(boxes, np.asarray(neighbours, np.float32).ravel(), self.min_face_size)


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
