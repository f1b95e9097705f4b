"""Video files -> sampled frames as uint8 arrays, one time segment at a time (PyAV).

The video labelling job cuts each video into time segments (`plan_segments`) so that one
long video spreads over the cluster, and decodes each segment on its own
(`decode_segment`). The union of the segments is exactly a sequential decode of the
whole file: same frames, same timestamps, same pixels, also with B-frames, open GOPs,
variable frame rate and MPEG-TS. That rests on four rules:

- time is each frame's presentation time (`frame.time`), never index / fps;
- a segment keeps the frames whose time is in [start, end): segments share borders, so
  every frame falls in exactly one;
- a segment seeks to a keyframe before `start - preroll` and checks that the seek really
  landed before the time it needs (MPEG-TS seeks by estimate): if not, it seeks further back;
- sampling at `fps` uses absolute time slots (slot k = floor(time * fps)), keeping the
  first frame of each slot: two segments agree on which frame is first at their border,
  because a segment also watches the frames of its first slot that lie before its start.

Sources are a local path or a file-like object with read/seek/tell (the job passes
`fs.open_input_file(path)`: S3 objects are then read by range, never downloaded whole).
Only the sampled frames are converted to arrays (conversion costs about as much as
decoding), with the display rotation applied. At most one decoded frame is held.

Problems with the input raise `VideoError` with a short machine `status` (a
schema.VideoStatus) and a message naming what was found. Errors of the storage itself
(an OSError from the file object) are not the video's fault and propagate unchanged.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterator, NamedTuple

import av
import cv2
import numpy as np

from fer_ray.config import COLORS
from fer_ray.schema import VideoStatus
from fer_ray.vision.decode import InputError

Source = str | os.PathLike | BinaryIO  # a path, or a file object with read, seek and tell

DEFAULT_MAX_PIXELS = 40_000_000  # the image default (face.max_pixels): an 8K frame is 33 Mpx
# FFmpeg reads a file object in blocks of this size. Each read of a pyarrow S3 file is one
# ranged GET, so small blocks (PyAV's default is 32 KiB) would mean thousands of requests.
READ_BLOCK = 1 << 20
# Slot arithmetic tolerance: a frame at exactly k / fps belongs to slot k despite float rounding.
SLOT_EPSILON = 1e-9
# Pixel formats whose first plane is 8-bit luma, which is the grey image as it is stored:
# read directly, it costs nothing, where FFmpeg's conversion to grey took about 0.65 ms of a
# 640x360 frame (five times its decoding).
LUMA_FIRST_FORMATS = frozenset({"gray", "nv12", "nv21", "yuv410p", "yuv411p", "yuv420p", "yuv422p", "yuv440p",
                                "yuv444p", "yuvj420p", "yuvj422p", "yuvj440p", "yuvj444p"})
FULL_RANGE = 2  # AVCOL_RANGE_JPEG: luma uses 0-255; otherwise video's 16-235, stretched as FFmpeg does
LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class VideoError(InputError):
    """A per-video problem: `status` is a VideoStatus, `message` says what was found."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` found. Sizes are as displayed, i.e. after the rotation is applied.

    duration_s is the video stream's duration, else the container's, else None (unknown:
    plan_segments then makes one open-ended segment). start_s is the presentation time of
    the first frame (0 for most MP4/MKV, often above 0 for MPEG-TS); all times, here and in
    DecodedFrame, are on that same clock. frame_count is the container's nominal count,
    None where the container does not store one (MKV, MPEG-TS). rotation is how far the
    stored pixels are turned counter-clockwise for display: 0, 90, 180 or 270.
    """
    codec: str
    width: int
    height: int
    duration_s: float | None
    start_s: float
    time_base: Fraction
    average_rate: Fraction | None
    frame_count: int | None
    rotation: int
    has_audio: bool


class DecodedFrame(NamedTuple):
    """One sampled frame. timestamp_s is the truth (the frame's presentation time);
    frame_index is the nominal index round((timestamp_s - stream start) * average rate),
    exact for constant frame rate, approximate for variable; -1 if the rate is unknown."""
    timestamp_s: float
    frame_index: int
    image: np.ndarray  # (H, W, 3) RGB or (H, W) grey uint8, rotated for display


# ---------------------------------------------------------------- public functions

def probe(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Describe a video, decoding only its first frame (which carries the rotation and
    proves the stream decodes). Raises VideoError: empty_file, not_a_video,
    no_video_stream, unknown_codec, too_large (before any decoding), no_frames, decode_error."""
    with _opened(source, max_pixels) as (container, stream):
        first = next(_decoded(container, stream), None)
        if first is None:
            raise VideoError(VideoStatus.NO_FRAMES, f"the {_describe(stream)} video stream has no frames")
        return _info(container, stream, first)


def plan_segments(duration_s: float | None, segment_s: float = 60.0,
                  start_s: float = 0.0) -> list[tuple[float, float]]:
    """Consecutive [start, end) time ranges of segment_s from start_s (pass probe's start_s).

    The last range is open-ended (end = math.inf), so frames past a container duration
    that is too short are not lost; an unknown duration (None) gives one open range.
    """
    if not (segment_s > 0 and math.isfinite(segment_s)):
        raise ValueError(f"segment_s: {segment_s!r} must be a positive number of seconds")
    if duration_s is None or not math.isfinite(duration_s):
        return [(start_s, math.inf)]
    count = max(1, math.ceil(duration_s / segment_s - SLOT_EPSILON))
    borders = [start_s + index * segment_s for index in range(count)] + [math.inf]
    return list(zip(borders[:-1], borders[1:]))


# Seconds before a wanted time to seek to: MPEG-TS loses frames at a boundary without it.
PREROLL_S = 2.0


def decode_segment(source: Source, start_s: float, end_s: float, fps: float, color: str = "rgb",
                   preroll_s: float = PREROLL_S, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[DecodedFrame]:
    """The sampled frames whose presentation time is in [start_s, end_s), in time order.

    fps > 0 keeps the first frame of each absolute 1/fps slot; fps == 0 keeps every frame.
    The checks of `probe` apply (raised on the first next()), except that a segment with
    no frame is simply empty. A stream that fails part-way yields the frames decoded
    before the failure, then raises VideoError(decode_error) saying when it stopped. So
    does an MP4 cut short (its index says where it should end); a cut MKV or MPEG-TS
    cannot be told from a short one and ends quietly after the frames it has.
    """
    _check_arguments(start_s, end_s, fps, color, preroll_s)
    with _opened(source, max_pixels) as (container, stream):
        stream.thread_type = "AUTO"  # frame and slice threads; set before the codec opens
        start_index = stream.start_time or 0
        sampler, time = SlotSampler(fps), None
        for frame in _frames_covering(container, stream, _first_needed(start_s, fps), start_s - preroll_s):
            time = frame.time
            if time >= end_s:
                break  # decoder output is in presentation order: nothing later falls inside
            if sampler.keep(time) and time >= start_s:  # the sampler sees the frames before start too
                index = _nominal_index(time - float(start_index * stream.time_base), stream)
                yield DecodedFrame(time, index, _to_array(frame, color))
        else:
            _check_not_cut_short(stream, time, end_s)


def clip_times(start_s: float, end_s: float, length: int) -> np.ndarray:
    """`length` times evenly spaced over [start_s, end_s): start_s + k * span / length, as seed
    001's frames 0, step, 2 step ... but in presentation time, so variable frame rate cannot skew them."""
    if not (length >= 1 and start_s < end_s and math.isfinite(end_s)):
        raise ValueError(f"clip_times: need length >= 1 and a finite window, got {length}, [{start_s}, {end_s})")
    return start_s + (end_s - start_s) * np.arange(length) / length


def nearest_frames(frame_times, targets) -> np.ndarray:
    """For each target time, the position in `frame_times` (ascending presentation times) of
    the frame shown nearest to it; ties go to the earlier frame. Fewer frames than targets
    give repeated positions."""
    times = np.asarray(frame_times, np.float64)
    if times.size == 0:
        raise ValueError("nearest_frames: no frames")
    targets = np.asarray(targets, np.float64)
    after = np.clip(np.searchsorted(times, targets, side="left"), 0, len(times) - 1)
    before = np.clip(after - 1, 0, len(times) - 1)
    earlier_is_nearer = np.abs(targets - times[before]) <= np.abs(times[after] - targets)
    return np.where(earlier_is_nearer, before, after)


def decode_nearest(source: Source, targets, color: str = "rgb", preroll_s: float = PREROLL_S,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> list[DecodedFrame]:
    """For each target time (ascending), the frame nearest to it (as `nearest_frames` picks),
    decoded in one sequential pass from the keyframe before the first target; only the picked
    frames are converted, each once (a frame nearest to several targets is repeated). Raises
    VideoError as `decode_segment` does; a decode failing part-way raises too (a clip needs
    every one of its frames)."""
    targets = [float(t) for t in targets]
    _check_arguments(targets[0], math.inf, 0, color, preroll_s)
    with _opened(source, max_pixels) as (container, stream):
        stream.thread_type = "AUTO"
        start_index = stream.start_time or 0
        picker = _NearestPicker(targets, lambda frame: DecodedFrame(
            frame.time, _nominal_index(frame.time - float(start_index * stream.time_base), stream),
            _to_array(frame, color)))
        for frame in _frames_covering(container, stream, targets[0], targets[0] - preroll_s):
            if picker.see(frame):
                break
        return picker.finish()


class _NearestPicker:
    """Streams frames in presentation order, holding only the previous one, and picks the
    nearest frame for each target (ties: the earlier), converting each picked frame once."""

    def __init__(self, targets: list[float], convert):
        self.targets, self.convert = targets, convert
        self.picked: list[DecodedFrame] = []
        self.previous = self.previous_converted = None

    def see(self, frame) -> bool:
        """Take the next frame; True once every target has its frame."""
        converted = None
        while len(self.picked) < len(self.targets) and frame.time >= self.targets[len(self.picked)]:
            target = self.targets[len(self.picked)]
            if self.previous is not None and target - self.previous.time <= frame.time - target:
                self.picked.append(self._previous())
            else:
                converted = converted or self.convert(frame)
                self.picked.append(converted)
        self.previous, self.previous_converted = frame, converted
        return len(self.picked) == len(self.targets)

    def _previous(self) -> DecodedFrame:
        if self.previous_converted is None:
            self.previous_converted = self.convert(self.previous)
        return self.previous_converted

    def finish(self) -> list[DecodedFrame]:
        """Targets after the last frame take the last frame."""
        if self.previous is None:
            raise VideoError(VideoStatus.NO_FRAMES, "no frame at or after the clip's start")
        while len(self.picked) < len(self.targets):
            self.picked.append(self._previous())
        return self.picked


def frame_times(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[float]:
    """Every frame's presentation time, in order, without converting a frame: for a video
    whose container states no duration, to know where it ends."""
    with _opened(source, max_pixels) as (container, stream):
        stream.thread_type = "AUTO"
        return [frame.time for frame in _decoded(container, stream)]


class SlotSampler:
    """Keeps the first frame of each absolute time slot of 1/fps s; fps == 0 keeps all."""

    def __init__(self, fps: float):
        self.fps = fps
        self.last_slot: int | None = None

    def keep(self, time_s: float) -> bool:
        if self.fps == 0:
            return True
        slot = slot_of(time_s, self.fps)
        kept = slot != self.last_slot
        self.last_slot = slot
        return kept


def slot_of(time_s: float, fps: float) -> int:
    """The absolute sampling slot of a time: the same in every segment."""
    return math.floor(time_s * fps + SLOT_EPSILON)


# ---------------------------------------------------------------- opening and checks

@contextmanager
def _opened(source: Source, max_pixels: int) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """The container and its video stream, checked up to the point where decoding starts."""
    if _size(source) == 0:
        raise VideoError(VideoStatus.EMPTY_FILE, "file is empty (0 bytes)")
    container = _open_container(source)
    try:
        stream = _video_stream(container)
        _check_decoder(stream)
        _check_size(stream, max_pixels)
        _ignore_other_streams(container, stream)
        yield container, stream
    finally:
        container.close()


def _size(source: Source) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)  # a missing file is a read error, not the video's
    size = source.seek(0, os.SEEK_END)
    source.seek(0)  # FFmpeg starts reading wherever the file object is: rewind it
    return size


def _open_container(source: Source) -> av.container.InputContainer:
    try:
        return av.open(source, mode="r", buffer_size=READ_BLOCK)
    except av.FFmpegError as err:
        raise VideoError(VideoStatus.NOT_A_VIDEO, f"not a readable video container: {_reason(err)}") from None


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The first video stream that is a moving picture (cover art of an audio file is not)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    found = ", ".join(f"{stream.type} ({_codec_name(stream)})" for stream in container.streams) or "no stream at all"
    raise VideoError(VideoStatus.NO_VIDEO_STREAM, f"no video stream in the {container.format.name} "
                                                  f"container; found: {found}")


def _ignore_other_streams(container: av.container.InputContainer, keep: av.VideoStream) -> None:
    """Let the demuxer skip audio and other streams' packets instead of reading and
    dropping them (MP4 then need not fetch those samples at all)."""
    for stream in container.streams:
        if stream.index != keep.index:
            stream.discard = av.stream.Discard.all


def _check_decoder(stream: av.VideoStream) -> None:
    if stream.codec_context is None:  # PyAV leaves it unset when FFmpeg has no decoder
        raise VideoError(VideoStatus.UNKNOWN_CODEC, "the video stream's codec is not one this FFmpeg build "
                                                    f"can decode ({stream.container.format.name} container)")


def _check_size(stream: av.VideoStream, max_pixels: int) -> None:
    """From the stream header, before the decoder allocates a frame."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise VideoError(VideoStatus.TOO_LARGE, f"video is {width}x{height} = {width * height} pixels, "
                                                f"over the limit of {max_pixels}")


def _check_arguments(start_s: float, end_s: float, fps: float, color: str, preroll_s: float) -> None:
    if color not in COLORS:
        raise ValueError(f"color: {color!r} is not valid; choose one of: {', '.join(COLORS)}")
    if not (fps >= 0 and math.isfinite(fps)):
        raise ValueError(f"fps: {fps!r} must be >= 0 (0 keeps every frame)")
    if not start_s < end_s:
        raise ValueError(f"segment [{start_s}, {end_s}) is empty: start must be before end")
    if not (preroll_s >= 0 and math.isfinite(preroll_s)):
        raise ValueError(f"preroll_s: {preroll_s!r} must be >= 0")


# ---------------------------------------------------------------- seeking and decoding

def _first_needed(start_s: float, fps: float) -> float:
    """The earliest time the segment must see: its start, or with sampling the start of
    the slot its start lies in (to know whether that slot's first frame came before)."""
    if fps == 0 or not math.isfinite(start_s):
        return start_s
    return slot_of(start_s, fps) / fps


def _frames_covering(container, stream, needed_s: float, seek_s: float) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order, starting at or before `needed_s`.

    Seeks to the keyframe before min(seek_s, needed_s). A seek can land after the time
    asked for (MPEG-TS seeks by estimate, MP4 indexes keyframes by decode time): then the
    first frame is later than needed and the seek is retried further back, doubling the
    step, until it lands early enough or reaches the stream's start.
    """
    target_s, step_s = min(seek_s, needed_s), max(needed_s - seek_s, 1.0)
    fresh = True
    while True:
        from_start = _seek(container, stream, target_s, fresh)
        frames = _decoded(container, stream)
        first = next(frames, None)
        if from_start or (first is not None and first.time <= needed_s + SLOT_EPSILON):
            break
        frames.close()
        target_s, step_s, fresh = target_s - step_s, step_s * 2, False
    if first is not None:
        yield first
        yield from frames


def _seek(container, stream, target_s: float, fresh: bool) -> bool:
    """Position the demuxer at the keyframe before target_s; True when that is the stream's
    start, which a fresh container (nothing demuxed yet) is at without seeking."""
    stream_start = stream.start_time or 0
    target = math.floor(target_s / stream.time_base) if math.isfinite(target_s) else stream_start
    at_start = target <= stream_start
    if at_start and fresh:
        return True
    try:
        container.seek(max(target, stream_start), backward=True, any_frame=False, stream=stream)
    except av.FFmpegError as err:
        raise VideoError(VideoStatus.DECODE_ERROR, f"cannot seek to {target_s:.3f} s: {_reason(err)}") from None
    return at_start


def _decoded(container, stream) -> Iterator[av.VideoFrame]:
    """container.decode(stream) with FFmpeg's errors turned into decode_error, naming the
    time of the last good frame. Frames without a timestamp cannot be placed and are skipped."""
    last_time = None
    try:
        for frame in container.decode(stream):
            if frame.time is not None:
                last_time = frame.time
                yield frame
    except av.FFmpegError as err:
        where = "before the first frame" if last_time is None else f"after the frame at {last_time:.3f} s"
        raise VideoError(VideoStatus.DECODE_ERROR, f"decoding failed {where}: {_reason(err)}") from None


def _check_not_cut_short(stream: av.VideoStream, last_time: float | None, end_s: float) -> None:
    """The data ended before end_s: fine where the stream ends there, an error where it
    ends earlier. Only a container that indexes every frame (MP4, MOV, AVI: they also
    count them) knows exactly where its stream ends; FFmpeg reads a file cut short as a
    normal end, so this is the only sign of a truncated MP4. MKV and MPEG-TS have no such
    index (their duration is read from the last timestamps in the file), so a cut one ends quietly.
    """
    if not stream.frames or not stream.duration:
        return
    declared_end = float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    rate = stream.average_rate or stream.guessed_rate
    tolerance = max(1.0, 3 / rate) if rate else 1.0  # the last frame lasts a frame; VFR longer
    reached = -math.inf if last_time is None else last_time
    if reached < min(end_s, declared_end) - tolerance:
        where = "before any frame" if last_time is None else f"at {last_time:.3f} s"
        raise VideoError(VideoStatus.DECODE_ERROR, f"the video data ends {where}, but the container's index "
                                                   f"runs to {declared_end:.3f} s: the file is probably truncated")


# ---------------------------------------------------------------- frames and facts

def _to_array(frame: av.VideoFrame, color: str) -> np.ndarray:
    """The frame as RGB or grey uint8, turned as it is meant to be displayed."""
    image = frame.to_ndarray(format="rgb24") if color == "rgb" else _grey(frame)
    turns = _quarter_turns(frame.rotation)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _grey(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma, full range, as FFmpeg's conversion to "gray" gives it (within one level)."""
    if frame.format.name not in LUMA_FIRST_FORMATS:
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]
    full = frame.format.name.startswith("yuvj") or frame.format.name == "gray" or frame.color_range == FULL_RANGE
    return luma.copy() if full else cv2.LUT(luma, LIMITED_TO_FULL)


def _quarter_turns(rotation: float) -> int:
    """FFmpeg's display rotation (degrees counter-clockwise, -180..180) as np.rot90's k
    (also counter-clockwise). Angles between quarter turns are rounded to the nearest one."""
    return round(rotation / 90) % 4


def _nominal_index(elapsed_s: float, stream: av.VideoStream) -> int:
    rate = stream.average_rate or stream.guessed_rate
    return round(elapsed_s * rate) if rate else -1


def _info(container, stream: av.VideoStream, first: av.VideoFrame) -> VideoInfo:
    rotation = _quarter_turns(first.rotation) * 90
    width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
    stream_start = float((stream.start_time or 0) * stream.time_base)
    return VideoInfo(
        codec=stream.codec_context.name, width=width, height=height,
        duration_s=_duration_s(container, stream), start_s=min(stream_start, first.time),
        time_base=stream.time_base, average_rate=stream.average_rate or stream.guessed_rate,
        frame_count=stream.frames or None, rotation=rotation, has_audio=bool(container.streams.audio))


def _duration_s(container, stream: av.VideoStream) -> float | None:
    """The video stream's own duration, else the container's (which may include a longer
    audio track), else None."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _describe(stream: av.VideoStream) -> str:
    return f"{stream.codec_context.name} {stream.codec_context.width}x{stream.codec_context.height}"


def _codec_name(stream) -> str:
    return stream.codec_context.name if stream.codec_context is not None else "codec without a decoder"


def _reason(err: av.FFmpegError) -> str:
    """FFmpeg's message without PyAV's errno and '<none>' file name decorations."""
    return err.strerror or str(err)
