"""The per-image face function: detect -> landmarks -> align, for every face.

`FaceExtractor` is what both the Ray face stage and the plain multiprocessing
benchmark call, so neither has its own copy of the recipe. It pickles as its
config only (see __reduce__): sending it to a worker rebuilds the detector and
landmarker there, never ships native dlib/OpenCV objects.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from fer_ray.config import FaceConfig
from fer_ray.vision.align import align_face
from fer_ray.vision.detect import create_detector, detect_followed, detect_many, detect_near, full_image_box
from fer_ray.vision.landmarks import create_landmarker, landmarks_many
from fer_ray.vision.tracking import MAX_LOST_S, MIN_IOU, FaceFollower


class Face(NamedTuple):
    face: np.ndarray  # (size,size) grey or (size,size,3) RGB uint8
    bbox: np.ndarray  # (4,) float32 x0,y0,x1,y1 in source pixels
    landmarks: np.ndarray  # (68,2) float32 in face-crop pixels
    det_score: float


class FaceExtractor:
    """Loads the detector and landmarker once; `extract(image)` -> list[Face], and
    `extract_many(images)`, which batches detection and landmarks (one forward pass each
    for the network models).

    detector_name is already resolved (FaceConfig.resolved_detector): "none" means
    the image is already a face crop, so the whole image is the box and the crop
    keeps it (crop="box"); any other name detects and crops as cfg.crop says (from the
    eyes, or the box with a margin). `device`
    ("cpu" or "cuda") is where the network models run. `lazy_landmarker`: the landmarker is
    built when first needed (see `landmarker`), not here.
    """

    def __init__(self, cfg: FaceConfig, detector_name: str, device: str = "cpu", lazy_landmarker: bool = False):
        self.cfg = cfg
        self.detector_name = detector_name
        self.device = device
        self.crop = "box" if detector_name == "none" else cfg.crop
        self.detector = None if detector_name == "none" else create_detector(
            detector_name, cfg.detector_model, cfg.min_face_size, device)
        if not lazy_landmarker:
            self.load_landmarker()

    @functools.cached_property
    def landmarker(self):
        """Built at most once. Lazily, face crops that carry their landmarks (AffectNet's) never
        build it: dlib's takes about 0.5 s of CPU and 70 MiB."""
        return create_landmarker(self.cfg.landmarker, self.cfg.landmark_model, self.device,
                                 self.cfg.precision, self.cfg.flip_input)

    def load_landmarker(self):
        """The landmarker, built now if it was not yet."""
        return self.landmarker

    def __reduce__(self):
        return (FaceExtractor, (self.cfg, self.detector_name, self.device))

    def extract(self, image: np.ndarray) -> list[Face]:
        """All faces in a grey or RGB uint8 image, largest first; [] if none."""
        return self.extract_many([image])[0]

    def extract_many(self, images: list[np.ndarray], expected: list | None = None,
                     followed: bool = False) -> list[list[Face]]:
        """The faces of each image (see extract). `expected`, per image, is None (search the
        whole image) or the (N, 4) boxes where faces are expected (a video's tracks): only
        faces near those are searched for (detect.detect_near). `followed`: the images are
        frames of a followed video, whose whole searches may be coarse (detect.detect_followed)."""
        found = [full_image_box(image) for image in images] if self.detector is None \
            else self._detect(images, expected or [None] * len(images), followed)
        if self.cfg.largest_only:
            found = [(boxes[:1], scores[:1]) for boxes, scores in found]
        points = landmarks_many(self.landmarker, images, [boxes for boxes, _ in found])
        return [[self._align(image, box, float(score), landmarks)
                 for box, score, landmarks in zip(boxes, scores, image_points)]
                for image, (boxes, scores), image_points in zip(images, found, points)]

    def follower(self, every_s: float, max_lost_s: float = MAX_LOST_S, same_face_iou: float = MIN_IOU,
                 whole_when_lost: bool = False) -> FaceFollower | None:
        """Where a video's frames are searched (see tracking.FaceFollower): near the faces followed
        between whole-frame searches every `every_s`, for detectors that take one frame at a time;
        None (every frame whole) when every_s is 0 or the detector batches whole frames, cheap on
        its device."""
        if every_s <= 0 or self.detector is None or hasattr(self.detector, "detect_many"):
            return None
        return FaceFollower(every_s, max_lost_s, same_face_iou, whole_when_lost)

    def extract_followed(self, images: list[np.ndarray], times_s, follower: FaceFollower | None) -> list[list[Face]]:
        """The faces of a video's frames in time order, each searched where `follower` says (its
        search depends on the faces found on the frame before, so frames go one at a time); with
        no follower, every frame whole in one call."""
        if follower is None:
            return self.extract_many(images)
        found = []
        for image, now in zip(images, times_s):
            faces = self.extract_many([image], [follower.search(now)], followed=True)[0]
            follower.saw(now, [face.bbox for face in faces])
            found.append(faces)
        return found

    def _detect(self, images: list[np.ndarray], expected: list,
                followed: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        whole = [i for i, boxes in enumerate(expected) if boxes is None]
        if followed:
            found = {i: detect_followed(self.detector, images[i], self.cfg.detect_side, self.cfg.min_face_size)
                     for i in whole}
        else:
            found = dict(zip(whole, detect_many(self.detector, [images[i] for i in whole], self.cfg.detect_side)))
        for i, boxes in enumerate(expected):
            if boxes is not None:
                found[i] = detect_near(self.detector, images[i], boxes, self.cfg.min_face_size)
        return [found[i] for i in range(len(images))]

    def _align(self, image: np.ndarray, box: np.ndarray, score: float,
               landmarks: np.ndarray) -> Face:
        face, crop_landmarks = align_face(image, landmarks, self.cfg, crop=self.crop, box=box)
        return Face(face, box.astype(np.float32), crop_landmarks, score)
