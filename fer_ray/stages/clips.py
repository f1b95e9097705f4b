"""ClipStage: one video of a video dataset -> its clips/ row and its manifest row.

Per video: its label file (the layout's `annotate`), a probe (vision.video.probe over a
random-access file: an S3 object is read by range), `clip_length` times evenly spaced over
the window (vision.video.clip_times), the frame nearest each time decoded in one sequential
pass (vision.video.decode_nearest), each distinct frame through the face extractor with the
image settings, the faces linked over the clip by the tracker and the largest track followed
(vision.tracking.largest_track). A frame where that face is missing keeps a blank crop and
`valid` False. Every per-video problem is a status; storage outages propagate.
"""
from __future__ import annotations

import functools
import hashlib
import math

import cv2
import numpy as np
import pyarrow as pa

from fer_ray import labels, schema, storage
from fer_ray.config import PreprocessConfig
from fer_ray.face68 import N_VALUES
from fer_ray.schema import Status
from fer_ray.stages.base import Stage, batch_rows
from fer_ray.stages.video import GREY_DETECTORS, open_video
from fer_ray.vision import tracking
from fer_ray.vision.faces import FaceExtractor
from fer_ray.vision.video import (
    PREROLL_S,
    VideoError,
    VideoInfo,
    clip_times,
    decode_nearest,
    frame_times,
    probe,
)

# What a problem with one video may raise besides VideoError: not the storage's fault.
FACE_ERRORS = (ValueError, RuntimeError, cv2.error)
TEXT_COLUMNS = ("source_uri", "dataset", "subject", "split", "status", "error")  # from the input row


class ClipProblem(Exception):
    """A per-clip status (not a VideoError) with its message."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def clip_id(dataset: str, source_uri: str, start_s: float, end_s: float) -> str:
    """Stable id of a clip: the same video and window give the same id on every run."""
    window = f"|{start_s:g}-{end_s:g}" if start_s or end_s else ""
    return hashlib.sha1(f"{dataset}|{source_uri}{window}".encode()).hexdigest()[:20]


def video_span(info: VideoInfo, cfg: PreprocessConfig, source) -> tuple[float, float]:
    """Where the video starts and ends in presentation time (its last frame read where the
    container states no duration)."""
    end = info.start_s + info.duration_s if info.duration_s else last_frame_end(source, cfg)
    return info.start_s, end


def clip_window(video_start: float, video_end: float, cfg: PreprocessConfig) -> tuple[float, float]:
    """[start, end) in presentation time: the configured window within the video."""
    start = video_start + cfg.clip_start_s
    end = min(video_end, video_start + cfg.clip_end_s) if cfg.clip_end_s else video_end
    if not start < end:
        raise ClipProblem(Status.EMPTY_WINDOW, f"window [{cfg.clip_start_s:g} s, {cfg.clip_end_s or 'end'}) "
                                               f"lies outside the video, which ends at "
                                               f"{video_end - video_start:.3f} s")
    return start, end


def last_frame_end(source, cfg: PreprocessConfig) -> float:
    """Where a video without a stated duration ends: its last frame plus one frame period."""
    times = frame_times(source, cfg.face.max_pixels)
    period = times[-1] - times[-2] if len(times) > 1 else 1.0
    return times[-1] + period


class ClipStage(Stage):
    is_actor = True  # the detector and landmark model load once per actor
    num_cpus = 0.8   # as the face stage: room for the light read and write operators
    batch_size = 1   # one video per call; its frames are the face extractor's batch

    def __init__(self, cfg: PreprocessConfig):
        from fer_ray.datasets import annotator

        super().__init__(cfg)
        cv2.setNumThreads(1)
        face = cfg.face
        self.detector = face.resolved_detector(cfg.layout)
        self.extractor = FaceExtractor(face, self.detector, cfg.device)
        self.color = "gray" if face.color == "gray" and self.detector in GREY_DETECTORS else "rgb"
        self.annotate = annotator(cfg.layout)
        self.read = functools.partial(storage.read_bytes, retry=cfg.retry)
        self.frame_shape = (face.size, face.size, face.channels)

    def __call__(self, batch: dict) -> pa.Table:
        return schema.table_from_rows([self.process(row) for row in batch_rows(batch)], schema.CLIP_ROWS)

    def process(self, row: dict) -> dict:
        out = schema.row(schema.CLIP_ROWS, **{k: str(row[k]) for k in TEXT_COLUMNS}, label=int(row["label"]),
                         is_manifest=True)
        if not out["status"]:
            self.label(out, row)
        if not out["status"]:
            self.make_clip(out)
        out["label_name"] = labels.label_name(int(out["label"]))
        return out

    def label(self, out: dict, row: dict) -> None:
        if not (self.annotate and row["sidecar"]):
            return
        labelled = {"sidecar": str(row["sidecar"]), "status": "", "error": "", "label": int(row["label"])}
        try:
            self.annotate(labelled, self.read)
        except OSError as err:  # about this object: StorageUnavailable is no OSError
            labelled["status"], labelled["error"] = Status.READ_ERROR, f"{type(err).__name__}: {err}"[:500]
        out.update(status=labelled["status"], error=labelled["error"], label=labelled["label"])

    def make_clip(self, out: dict) -> None:
        """Fill the clip's columns, or its status and error."""
        cfg = self.cfg
        try:
            with open_video(out["source_uri"], cfg.retry) as source:
                info = probe(source, cfg.face.max_pixels)
                video_start, video_end = video_span(info, cfg, source)
                start, end = clip_window(video_start, video_end, cfg)
                frames = decode_nearest(source, clip_times(start, end, cfg.clip_length), self.color, PREROLL_S,
                                        cfg.face.max_pixels)
            out.update(self.follow_face(frames))
        except (VideoError, ClipProblem) as err:
            out.update(status=err.status, error=err.message)
            return
        except (FileNotFoundError, PermissionError) as err:
            out.update(status=Status.READ_ERROR, error=storage.first_line(err))
            return
        except FACE_ERRORS as err:
            out.update(status=Status.FACE_ERROR, error=f"{type(err).__name__}: {err}"[:500])
            return
        out.update(clip_id=clip_id(out["dataset"], out["source_uri"], cfg.clip_start_s, cfg.clip_end_s),
                   duration_s=video_end - video_start,
                   fps=float(info.average_rate) if info.average_rate else math.nan)
        out.update(clip_status(out["n_valid"], cfg.clip_length, cfg.min_valid_frames, out["track_id"]))

    def follow_face(self, frames: list) -> dict:
        """The clip's columns: the largest track's face on each frame, blank where it is missing."""
        distinct = list({frame.timestamp_s: frame for frame in frames}.values())
        found = self.faces_on([frame.image for frame in distinct], [frame.timestamp_s for frame in distinct])
        faces = [(frame.timestamp_s, face) for frame, faces in zip(distinct, found) for face in faces]
        times = np.array([t for t, _ in faces], np.float64)
        boxes = np.array([face.bbox for _, face in faces], np.float64).reshape(-1, 4)
        ids = tracking.track_faces(times, boxes)
        followed = tracking.largest_track(ids, boxes)
        on_frame = {t: face for (t, face), track in zip(faces, ids) if track == followed}
        crops, points, valid = [], [], []
        for frame in frames:
            face = on_frame.get(frame.timestamp_s)
            valid.append(face is not None)
            crops.append(self.crop(face))
            points.append(face.landmarks.reshape(-1) if face is not None else np.full(N_VALUES, np.nan, np.float32))
        return {"clip_length": len(frames), "frames": b"".join(crops), "frame_shape": (len(frames), *self.frame_shape),
                "landmarks": np.concatenate(points).astype(np.float32), "valid": np.array(valid, bool),
                "timestamps_s": np.array([f.timestamp_s for f in frames], np.float64),
                "frame_indices": np.array([f.frame_index for f in frames], np.int32),
                "n_valid": int(sum(valid)), "n_faces": int(sum(valid)), "track_id": followed,
                "repeated": len(distinct) < len(frames), "detector": self.detector,
                "landmarker": self.cfg.face.landmarker}

    def faces_on(self, images: list, times_s: list) -> list:
        """The faces of the clip's frames: near the faces followed between whole-frame searches
        (every detect_every_s, and whenever no face was seen lately), where the detector allows."""
        return self.extractor.extract_followed(images, times_s,
                                               self.extractor.follower(self.cfg.detect_every_s, whole_when_lost=True))

    def crop(self, face) -> bytes:
        if face is None:
            return bytes(int(np.prod(self.frame_shape)))
        crop = face.face if face.face.ndim == 3 else face.face[:, :, None]
        if crop.shape != self.frame_shape:
            raise ValueError(f"aligned crop of shape {crop.shape}, expected {self.frame_shape}")
        return np.ascontiguousarray(crop).tobytes()


def clip_status(n_valid: int, length: int, needed: int, track: int) -> dict:
    """The status of a decoded clip from how many of its frames show the followed face."""
    if track < 0:
        return {"status": Status.NO_FACE, "error": f"no face found on any of the {length} frames", "is_clip": False}
    if n_valid < needed:
        return {"status": Status.TOO_FEW_VALID, "is_clip": False,
                "error": f"the followed face is on {n_valid} of {length} frames; {needed} needed (min_valid_fraction)"}
    return {"status": Status.OK, "error": "", "is_clip": True}
