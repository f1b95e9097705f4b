"""The stages of `label-videos`: probe and plan segments, find and track faces in one segment,
and the per-video reduce (join tracks, smooth, summarise, label runs, WebVTT, timeline PNG with
a face per track, annotated MP4).

Rows between them are schema.VIDEO_WORK_ROWS (with crops) and schema.VIDEO_LABEL_ROWS (after
classification, without); the reduce emits schema.VIDEO_OUTPUT_ROWS. Every per-video problem
is data (a `status` and `error`); errors of the storage itself propagate (the run fails,
resumable, and no video is blamed).
"""
from __future__ import annotations

import hashlib
import math
import os
import posixpath
import re
import tempfile
import time
from dataclasses import dataclass

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fer_ray import results, schema, storage
from fer_ray.config import PreprocessConfig, RetryConfig
from fer_ray.schema import Status, VideoStatus
from fer_ray.stages.base import Stage, batch_rows
from fer_ray.vision import timeline, tracking
from fer_ray.vision.annotate import H264Writer, annotated_frames, marks_by_time
from fer_ray.vision.chart import timeline_png
from fer_ray.vision.decode import decode_image
from fer_ray.vision.draw import encode_png
from fer_ray.vision.faces import FaceExtractor
from fer_ray.vision.video import VideoError, decode_segment, plan_segments, probe

# Detectors that read grey frames as well as RGB: with grey crops, the frames are decoded grey
# (a third of the conversion and of the memory).
GREY_DETECTORS = ("none", "haar", "dlib_hog")


@dataclass(frozen=True)
class SegmentSettings:
    """What the probe and segment stages need: the face stage's config (the checkpoint's face
    settings with this run's overrides) and the video settings of the run."""
    face: PreprocessConfig
    fps: float
    segment_s: float
    overlap_s: float
    preroll_s: float
    max_pixels: int
    min_iou: float
    max_lost_s: float
    retry: RetryConfig
    detect_every_s: float = 0.0


@dataclass(frozen=True)
class CommittedRun:
    """The committed run that carried videos are taken from: its prefix and its files per folder."""
    run_uri: str
    files: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class ReduceSettings:
    """What the per-video reduce needs: where the run writes, the label settings, how the
    segments decoded (an annotated video decodes the same frames again), and the committed run
    to take carried videos from (None when nothing is carried)."""
    run_uri: str
    class_names: tuple[str, ...]
    smooth_s: float
    min_run_s: float
    min_iou: float
    max_lost_s: float
    retry: RetryConfig
    fps: float = 5.0
    preroll_s: float = 2.0
    max_pixels: int = 40_000_000
    committed: CommittedRun | None = None


def open_video(uri: str, retry: RetryConfig):
    """A random-access file of the video (an S3 object is then read by range, never downloaded)."""
    fs, path = storage.resolve(uri)
    return storage.retrying(f"open {uri}", lambda: fs.open_input_file(path), retry)


def work_row(**values) -> dict:
    return schema.row(schema.VIDEO_WORK_ROWS, **values)


def object_etag(source) -> str:
    """The object's ETag (an S3 file has it from the open); '' where the store has none."""
    value = (source.metadata() or {}).get("ETag", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- probe and plan

class ProbeStage(Stage):
    """Input rows (video_uri, size, status: '' = to be probed) -> one row per time segment of
    each video, or the input's own row (segment_index -1) with the reason it is not one, or
    (segment_index -1, carried) for a video the committed run labelled: same ETag, if the
    store has them, as the committed run saw."""
    # reads a header and decodes one frame; at most what a segment actor (0.8) leaves of a 1-CPU
    # node: on a cluster of small nodes no node has more free, and the probe would wait forever
    num_cpus = 0.2
    batch_size = 1

    def __call__(self, batch: dict) -> pa.Table:
        out = []
        for row in batch_rows(batch):
            out.extend(self.segments(row))
        return schema.table_from_rows(out, schema.VIDEO_WORK_ROWS)

    def segments(self, row: dict) -> list[dict]:
        base = {"video_uri": str(row["video_uri"]), "size": int(row["size"]), "mtime_ns": int(row["mtime_ns"]),
                "annotate": bool(row["annotate"])}
        if row["status"]:
            return [work_row(**base, status=str(row["status"]), error=str(row["error"]))]
        started = time.time()
        try:
            with open_video(base["video_uri"], self.cfg.retry) as source:
                base["etag"] = object_etag(source)
                if row["carried"] and base["etag"] == str(row["etag"]):
                    return [work_row(**base, carried=True)]
                info = probe(source, self.cfg.max_pixels)
        except VideoError as err:
            return [work_row(**base, status=err.status, error=err.message, probe_s=time.time() - started)]
        except (FileNotFoundError, PermissionError) as err:  # about this object, not the storage
            return [work_row(**base, status=Status.READ_ERROR, error=storage.first_line(err))]
        spans = plan_segments(info.duration_s, self.cfg.segment_s, info.start_s)
        described = dict(
            codec=info.codec, width=info.width, height=info.height, n_segments=len(spans),
            duration_s=np.nan if info.duration_s is None else info.duration_s,
            fps=float(info.average_rate) if info.average_rate else np.nan, probe_s=time.time() - started)
        return [work_row(**base, **described, segment_index=k, start_s=start, end_s=end)
                for k, (start, end) in enumerate(spans)]


# ---------------------------------------------------------------- one segment

class SegmentStage(Stage):
    """One row per segment -> that row (frames sampled, status, seconds) plus one row per face
    found on its sampled frames, with its crop and its track within the segment.

    Segment k > 0 also decodes the overlap_s before its start (tracking.py's contract: those
    rows are not owned, they let the reduce join tracks across the border). Frames go to the
    face extractor `batch_size` at a time and only their crops are kept: a segment's memory is
    its crops, never its frames. A decode that fails part-way keeps the faces found before."""
    is_actor = True  # the detector and landmark model load once per actor
    num_cpus = 0.8   # as the face stage: room for the light operators beside a pool of one per CPU
    batch_size = 1

    def __init__(self, cfg: SegmentSettings):
        super().__init__(cfg)
        cv2.setNumThreads(1)
        face = cfg.face.face
        self.detector = face.resolved_detector("folder")
        self.extractor = FaceExtractor(face, self.detector, cfg.face.device)
        self.color = "gray" if face.color == "gray" and self.detector in GREY_DETECTORS else "rgb"

    def __call__(self, batch: dict) -> pa.Table:
        out = []
        for row in batch_rows(batch):
            out.extend(self.process(row) if int(row["segment_index"]) >= 0 else [row])
        return schema.table_from_rows(out, schema.VIDEO_WORK_ROWS)

    def process(self, row: dict) -> list[dict]:
        started = time.time()
        start, end, index = float(row["start_s"]), float(row["end_s"]), int(row["segment_index"])
        decode_from = start - self.cfg.overlap_s if index > 0 else start
        faces, sampled, status, error = [], 0, "", ""
        try:
            with open_video(str(row["video_uri"]), self.cfg.retry) as source:
                frames = decode_segment(source, decode_from, end, self.cfg.fps, self.color,
                                        self.cfg.preroll_s, self.cfg.max_pixels)
                follower = self.extractor.follower(self.cfg.detect_every_s, self.cfg.max_lost_s, self.cfg.min_iou)
                for chunk in chunked(frames, self.cfg.face.batch_size):
                    sampled += sum(frame.timestamp_s >= start for frame in chunk)
                    faces.extend(self.faces_of(chunk, follower))
        except VideoError as err:
            status, error = err.status, f"segment {index} [{start:.3f} s, {end:.3f} s): {err.message}"
        except (FileNotFoundError, PermissionError) as err:
            status, error = Status.READ_ERROR, f"segment {index}: {storage.first_line(err)}"
        except (ValueError, RuntimeError, cv2.error) as err:  # one bad frame must not end the job
            status, error = VideoStatus.DECODE_ERROR, f"segment {index}: {type(err).__name__}: {err}"
        self.track(faces, start, end)
        keep_thumbnails(faces)
        segment = {**row, "frames_sampled": sampled, "status": status, "error": error,
                   "elapsed_s": time.time() - started}
        return [segment, *({**row, **face} for face in faces)]

    def faces_of(self, frames: list, follower: tracking.FaceFollower | None = None) -> list[dict]:
        """The faces of a chunk of frames: in one call, or frame by frame where a follower
        says where to search (each frame's search depends on the faces of the one before)."""
        found = self.extractor.extract_followed([frame.image for frame in frames],
                                                [frame.timestamp_s for frame in frames], follower)
        return [{"is_face": True, "timestamp_s": frame.timestamp_s, "frame_index": frame.frame_index,
                 "bbox": face.bbox, "landmarks": face.landmarks.reshape(-1), "det_score": face.det_score,
                 "face": np.ascontiguousarray(face.face).tobytes(),
                 "face_shape": face.face.shape if face.face.ndim == 3 else (*face.face.shape, 1)}
                for frame, faces in zip(frames, found) for face in faces]

    def track(self, faces: list[dict], start: float, end: float) -> None:
        """Local track ids over all the segment's faces (overlap included), and which it owns."""
        times = np.array([face["timestamp_s"] for face in faces], np.float64)
        boxes = np.array([face["bbox"] for face in faces], np.float64).reshape(-1, 4)
        ids = tracking.track_faces(times, boxes, min_iou=self.cfg.min_iou, max_lost_s=self.cfg.max_lost_s)
        owned = tracking.owned_rows(times, start, end)
        for face, track, own in zip(faces, ids, owned):
            face["local_track"], face["owned"] = int(track), bool(own)


def keep_thumbnails(faces: list[dict]) -> None:
    """A PNG of the crop on each local track's best owned face (highest det_score), b'' on the
    others: the crops are dropped after classification, these few go on to the reduce."""
    best = tracking.best_of_each_track([f["local_track"] for f in faces], [f["det_score"] for f in faces],
                                       [f["owned"] for f in faces])
    for face, is_best in zip(faces, best):
        face["thumbnail"] = encode_png(schema.face_array(face["face"], face["face_shape"])) if is_best else b""


def chunked(items, size: int):
    """Lists of `size` items. When `items` fails part-way, the items it gave before the failure
    come out first (a partial chunk), then the failure: a segment keeps the frames decoded
    before a damaged packet."""
    chunk = []
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
    except Exception as failure:
        if chunk:
            yield chunk
        raise failure from None
    if chunk:
        yield chunk


# ---------------------------------------------------------------- per video

# What may stop an annotated video without being the storage's fault: the video was removed
# or cannot be decoded, or drawing or encoding refused it. Recorded, never failing the video.
ANNOTATE_ERRORS = (FileNotFoundError, PermissionError, VideoError, av.FFmpegError, ValueError, RuntimeError,
                   cv2.error)


def output_row(**values) -> dict:
    return schema.row(schema.VIDEO_OUTPUT_ROWS, **{"label": "", **values})


def vtt_name(video_uri: str) -> str:
    """A file name per video: readable, and unique (two folders may hold a.mp4)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", posixpath.basename(video_uri))[:80]
    return f"{stem}-{hashlib.sha1(video_uri.encode()).hexdigest()[:8]}.vtt"


def owned_faces(faces: list[dict], min_iou: float, max_lost_s: float) -> list[tuple[int, dict]]:
    """(video-wide track id, face) of the faces the segments own, by track and time: the
    segments' local tracks joined across their borders."""
    if not faces:
        return []
    column = {name: np.array([f[name] for f in faces]) for name in
              ("segment_index", "local_track", "timestamp_s", "owned")}
    boxes = np.stack([f["bbox"] for f in faces])
    mapping = tracking.join_tracks(column["segment_index"], column["local_track"], column["timestamp_s"], boxes,
                                   column["owned"], min_iou=min_iou, max_lost_s=max_lost_s)
    ids = tracking.video_track_ids(mapping, column["segment_index"], column["local_track"])
    kept = [(int(track), face) for track, face in zip(ids, faces) if face["owned"]]
    kept.sort(key=lambda item: (item[0], item[1]["timestamp_s"]))
    return kept


def thumbnails(kept: list[tuple[int, dict]]) -> dict[int, np.ndarray]:
    """Per video-wide track, the face of its best thumbnail (highest det_score) among those its
    local tracks carried."""
    best = tracking.best_of_each_track([track for track, _ in kept], [face["det_score"] for _, face in kept],
                                       [len(face["thumbnail"]) > 0 for _, face in kept])
    return {track: decode_image(face["thumbnail"]) for (track, face), chosen in zip(kept, best) if chosen}


class LabelVideoStage(Stage):
    """All rows of one video (segment rows and face rows, no pixels) -> its frames/, tracks/,
    segments/ (label runs) and videos/ rows; writes its WebVTT file and timeline PNG under the
    run, and its annotated MP4 when the video is one of those to annotate."""
    num_cpus = 0.2  # as ProbeStage: fits beside a segment actor on a 1-CPU node

    def __call__(self, batch: dict) -> pa.Table:
        started = time.time()
        rows = batch_rows(batch)
        segments = sorted((r for r in rows if not r["is_face"]), key=lambda r: int(r["segment_index"]))
        video = segments[0]
        if video["carried"]:
            out = self.carry(str(video["video_uri"]))
        elif int(video["segment_index"]) < 0:  # no video: its one row says why
            out = [self.video_row(video, [], started)]
        else:
            out = self.label(video, segments, [r for r in rows if r["is_face"]], started)
        return schema.table_from_rows(out, schema.VIDEO_OUTPUT_ROWS)

    def label(self, video: dict, segments: list[dict], faces: list[dict], started: float) -> list[dict]:
        classes = list(self.cfg.class_names)
        kept = owned_faces(faces, self.cfg.min_iou, self.cfg.max_lost_s)
        frames = self.frame_rows(kept)
        tracks, runs, curves = [], {}, {}
        for track_id in sorted({f["track_id"] for f in frames}):
            mine = [f for f in frames if f["track_id"] == track_id]
            times, smoothed = [f["timestamp_s"] for f in mine], np.stack([f["smoothed"] for f in mine])
            tracks.append((track_id, timeline.summarize_track(times, smoothed, classes)))
            runs[track_id] = timeline.label_runs(times, smoothed, classes, self.cfg.min_run_s)
            curves[track_id] = (np.asarray(times), smoothed)
        name = vtt_name(str(video["video_uri"]))
        uri = storage.join(self.cfg.run_uri, "webvtt", name)
        storage.write_bytes(uri, timeline.webvtt(runs).encode(), self.cfg.retry)
        picture = timeline_png(curves, classes, title=posixpath.basename(str(video["video_uri"])),
                               thumbnails=thumbnails(kept) or None)
        storage.write_bytes(timeline_uri(uri), picture, self.cfg.retry)
        stem = name[:-len(".vtt")]
        annotated, annotate_error = self.annotate(video, segments, frames, stem) if video["annotate"] else ("", "")
        summary = timeline.summarize_video([s for _, s in tracks], classes)
        stopped = next((s for s in segments if s["status"]), None)
        status = stopped["status"] if stopped else VideoStatus.OK if frames else VideoStatus.NO_FACE
        video_row = self.video_row(
            {**video, "status": status, "error": stopped["error"] if stopped else ""}, segments, started,
            n_faces=len(frames), n_tracks=summary.n_tracks, dominant=summary.dominant,
            face_time_s=summary.face_time_s, webvtt=uri, annotated=annotated, annotate_error=annotate_error,
            mean_probabilities=[summary.mean_probabilities[c] for c in classes])
        return [*({**f, "video_uri": video["video_uri"], "is_frame": True} for f in frames),
                *(self.track_row(video, track_id, s) for track_id, s in tracks),
                *(output_row(video_uri=video["video_uri"], track_id=track_id, start_s=run.start_s, end_s=run.end_s,
                             label=run.label, confidence=run.confidence, n_frames=run.n_frames, is_run=True)
                  for track_id, track_runs in runs.items() for run in track_runs),
                video_row]

    def frame_rows(self, kept: list[tuple[int, dict]]) -> list[dict]:
        """The owned faces with video-wide track ids and smoothed probabilities, by track and time."""
        if not kept:
            return []
        probs = np.stack([np.asarray(face["probabilities"], np.float32) for _, face in kept])
        smoothed = timeline.smooth_tracks([t for t, _ in kept], [f["timestamp_s"] for _, f in kept], probs,
                                          self.cfg.smooth_s)
        names = np.array(self.cfg.class_names, dtype=object)
        return [output_row(frame_index=face["frame_index"], timestamp_s=face["timestamp_s"], track_id=track,
                           bbox=face["bbox"], landmarks=face["landmarks"], det_score=face["det_score"],
                           probabilities=p, smoothed=s, label=names[int(s.argmax())], confidence=float(s.max()),
                           segment_index=face["segment_index"])
                for (track, face), p, s in zip(kept, probs, smoothed)]

    def annotate(self, video: dict, segments: list[dict], frames: list[dict], stem: str) -> tuple[str, str]:
        """The video's sampled frames again, with their faces drawn, as annotated/<stem>.mp4.
        Returns its URI and '' or, where decoding stopped part-way, what stopped it (the frames
        before are in the file); or '' and why there is no file. Never fails the video."""
        uri = storage.join(self.cfg.run_uri, "annotated", stem + ".mp4")
        marks = marks_by_time(frames)
        with tempfile.TemporaryDirectory(prefix="fer-ray-annotate-") as folder:
            local = os.path.join(folder, stem + ".mp4")
            try:
                written, stopped = self.draw_video(str(video["video_uri"]), float(segments[0]["start_s"]), marks,
                                                   local)
            except ANNOTATE_ERRORS as err:
                return "", f"not annotated: {type(err).__name__}: {storage.first_line(err)}"
            if not written:
                return "", f"not annotated: {stopped or 'no frame decoded'}"
            storage.upload_file(local, uri, self.cfg.retry)
        return uri, f"annotated video stops early: {stopped}" if stopped else ""

    def draw_video(self, video_uri: str, start_s: float, marks: dict, path: str) -> tuple[int, str]:
        """Decode the frames the segments sampled, draw, encode: (frames written, '' or why it stopped)."""
        with open_video(video_uri, self.cfg.retry) as source, H264Writer(path) as writer:
            decoded = decode_segment(source, start_s, math.inf, self.cfg.fps, "rgb", self.cfg.preroll_s,
                                     self.cfg.max_pixels)
            try:
                for time_s, image in annotated_frames(decoded, marks):
                    writer.write(time_s, image)
            except VideoError as err:  # a stream that fails part-way: keep the frames before
                return writer.frames, err.message
        return writer.frames, ""

    def track_row(self, video: dict, track_id: int, s: timeline.TrackSummary) -> dict:
        classes = self.cfg.class_names
        return output_row(video_uri=video["video_uri"], track_id=track_id, n_frames=s.n_frames, first_s=s.first_s,
                          last_s=s.last_s, face_time_s=s.face_time_s, dominant=s.dominant,
                          mean_probabilities=[s.mean_probabilities[c] for c in classes],
                          time_share=[s.time_share[c] for c in classes], is_track=True)

    def video_row(self, video: dict, segments: list[dict], started: float, **values) -> dict:
        spent = float(video["probe_s"]) + sum(float(s["elapsed_s"]) for s in segments) + time.time() - started
        keep = ("video_uri", "status", "error", "size", "mtime_ns", "etag", "codec", "width", "height", "duration_s",
                "fps", "n_segments")
        return output_row(**{name: video[name] for name in keep}, classes=list(self.cfg.class_names),
                          frames_sampled=sum(int(s["frames_sampled"]) for s in segments),
                          elapsed_s=spent, is_video=True, **values)

    def carry(self, video_uri: str) -> list[dict]:
        """A video the committed run labelled: its rows of every folder, read from that run's
        files, and its WebVTT and timeline copied into this run (the committed run is removed
        once this one commits), the videos/ row pointing at the copies."""
        committed = self.cfg.committed
        out = []
        for folder, (flag, _) in schema.VIDEO_FOLDERS.items():
            for row in committed_rows(committed.files[folder], video_uri):
                if folder == "videos":
                    row = {**row, "carried": True, "webvtt": self.copy_files(row["webvtt"], "webvtt"),
                           "annotated": self.copy_files(row.get("annotated", ""), "annotated")}
                out.append(output_row(**row, **{flag: True}))
        return out

    def copy_files(self, uri: str, folder: str) -> str:
        """Copy a carried video's file of a folder (webvtt/ with its timeline PNG, annotated/) into
        this run; its new URI. (By name: the committed run may have spelt the output otherwise,
        file:// or a slash.)"""
        if not uri:
            return ""
        name = posixpath.basename(uri)
        old, new = (storage.join(run, folder, name) for run in (self.cfg.committed.run_uri, self.cfg.run_uri))
        copies = [(old, new), (timeline_uri(old), timeline_uri(new))] if folder == "webvtt" else [(old, new)]
        for source, target in copies:
            storage.copy_file(source, target, self.cfg.retry)
        return new


def timeline_uri(webvtt_uri: str) -> str:
    """The timeline PNG beside a video's WebVTT file."""
    folder, name = posixpath.split(posixpath.dirname(webvtt_uri))[0], posixpath.basename(webvtt_uri)
    return storage.join(folder, "timelines", name[:-len(".vtt")] + ".png")


def committed_rows(files: tuple[str, ...], video_uri: str) -> list[dict]:
    """One video's rows of a committed folder (no files: none)."""
    if not files:
        return []
    return results.arrow_dataset(list(files)).to_table(filter=pc.field("video_uri") == video_uri).to_pylist()
