"""Annotated videos (label-videos --annotate): a video's sampled frames with each face's box,
video-wide track id and smoothed label drawn, encoded as an H.264 MP4 with PyAV.

Frames are drawn and encoded one at a time (memory: one frame, whatever the video's length).
Each frame keeps its presentation time, counted from the first frame, in a millisecond time
base: the MP4 plays at the video's own pace whatever the sampling rate (variable frame rate
included), and frame k of the MP4 is the k-th sampled frame.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np

from fer_ray.vision.draw import draw_tracked_faces, face_caption

TIME_BASE = Fraction(1, 1000)
# x264's fastest preset: about twice the speed of veryfast here (bench/annotate.py) for larger
# files; the annotated video is one serial task per video, and a picture to look at, not to keep.
PRESET = "ultrafast"
NOMINAL_RATE = 5  # what the stream declares; the frames' own times say when each is shown
TIME_DECIMALS = 6  # a frame's time as a key: the segments and the re-decode read the same float


def time_key(timestamp_s: float) -> float:
    return round(float(timestamp_s), TIME_DECIMALS)


def marks_by_time(faces: Iterable[dict]) -> dict[float, list[tuple]]:
    """{frame time key: [(bbox, track_id, caption), ...]} from a video's frames/ rows (timestamp_s,
    bbox, track_id, label, confidence)."""
    marks: dict[float, list[tuple]] = {}
    for face in faces:
        caption = face_caption(face["track_id"], face["label"], face["confidence"])
        marks.setdefault(time_key(face["timestamp_s"]), []).append((face["bbox"], int(face["track_id"]), caption))
    return marks


def annotated_frames(frames: Iterable, marks: dict[float, list[tuple]]) -> Iterator[tuple[float, np.ndarray]]:
    """(time, RGB image with its faces drawn) for each decoded frame (vision.video.DecodedFrame)."""
    for frame in frames:
        faces = marks.get(time_key(frame.timestamp_s), [])
        yield frame.timestamp_s, draw_tracked_faces(frame.image, [f[0] for f in faces], [f[1] for f in faces],
                                                    [f[2] for f in faces])


class H264Writer:
    """An H.264 MP4 at `path`, written a frame at a time: `write(time_s, rgb_image)` in time
    order, `frames` says how many so far. Leaving the `with` block flushes the encoder, also
    after an exception, so the frames written before it make a complete file. Odd sizes are
    padded by a pixel (4:2:0 needs even ones)."""

    def __init__(self, path: str, crf: int = 23):
        self.path, self.crf = path, crf
        self.frames, self.first_s, self.last_pts = 0, 0.0, -1
        self.container, self.stream = None, None

    def __enter__(self) -> H264Writer:
        self.container = av.open(self.path, "w", format="mp4", options={"movflags": "+faststart"})
        return self

    def write(self, time_s: float, image: np.ndarray) -> None:
        if self.stream is None:
            self.stream = self._open_stream(image.shape)
            self.first_s = time_s
        self.last_pts = max(round((time_s - self.first_s) / TIME_BASE), self.last_pts + 1)  # strictly increasing
        self.container.mux(self.stream.encode(_video_frame(image, self.last_pts)))
        self.frames += 1

    def __exit__(self, *exc) -> None:
        try:
            if self.stream is not None:
                self.container.mux(self.stream.encode())  # the encoder's delayed frames
        finally:
            self.container.close()

    def _open_stream(self, shape: tuple[int, ...]):
        stream = self.container.add_stream("libx264", rate=NOMINAL_RATE,
                                           options={"crf": str(self.crf), "preset": PRESET})
        stream.height, stream.width = (side + side % 2 for side in shape[:2])
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        return stream


def _video_frame(image: np.ndarray, pts: int) -> av.VideoFrame:
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts, frame.time_base = pts, TIME_BASE
    return frame
