"""Emotion over time: per face track and per video. Smoothing, summaries, label runs, WebVTT.

Pure numpy, no Ray. A track is its rows in time order: `timestamps_s` (n,) and
`probabilities` (n, C), one row per sampled frame, columns in the order of `class_names` (the
model's label set, e.g. `fer_ray.labels.LABEL_SETS["fer2013"]`; nothing here assumes one).

The time a frame stands for: sampled frames may be irregular (variable frame rate, frames
without a face), so a frame stands for the time from halfway to the previous frame to halfway
to the next; the track's first and last frames start and end it (nothing is extrapolated).
A track's face time is then last - first, shares of time are the trapezoid rule over the
frame labels, and label runs tile [first, last] exactly. A one-frame track stands for no
time: where every weight is 0, frames count equally instead.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Window edges are t +- window / 2 in floats: a neighbour exactly on the edge stays inside.
TIME_EPS = 1e-9


@dataclass(frozen=True)
class TrackSummary:
    n_frames: int
    first_s: float
    last_s: float
    face_time_s: float                    # last_s - first_s: the time the frames stand for
    mean_probabilities: dict[str, float]  # weighted by the time each frame stands for
    time_share: dict[str, float]          # share of face time whose frame's top class is this one
    dominant: str                         # argmax of mean_probabilities


@dataclass(frozen=True)
class Run:
    start_s: float
    end_s: float
    label: str
    confidence: float  # mean probability of `label` over the run's frames
    n_frames: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class VideoSummary:
    n_tracks: int
    face_time_s: float                    # summed over tracks (two faces at once count twice)
    mean_probabilities: dict[str, float]  # tracks' means weighted by their face time
    time_share: dict[str, float]          # share of all face time per class
    dominant: str                         # argmax of mean_probabilities; '' without tracks


def track_arrays(timestamps_s, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """float64 (n,) times and (n, C) probabilities; refuses rows out of time order."""
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    probs = np.asarray(probabilities, np.float64)
    probs = probs[:, None] if probs.ndim == 1 else probs
    if probs.ndim != 2 or len(probs) != len(times):
        raise ValueError(f"{len(times)} timestamps for probabilities of shape {np.shape(probabilities)}")
    if np.any(np.diff(times) < 0):
        raise ValueError("a track's rows must be sorted by timestamp")
    return times, probs


def frame_edges(timestamps_s) -> np.ndarray:
    """(n + 1,) edges: frame i stands for [edges[i], edges[i + 1]] (midpoints; first and last at the ends)."""
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    if times.size == 0:
        return np.zeros(0)
    return np.concatenate([times[:1], (times[:-1] + times[1:]) / 2, times[-1:]])


def frame_weights(timestamps_s) -> np.ndarray:
    """The time each frame stands for (half the gap to each neighbour); equal when all are 0."""
    weights = np.diff(frame_edges(timestamps_s))
    return weights if weights.sum() > 0 else np.ones_like(weights)


def smooth(timestamps_s, probabilities, window_s: float = 1.0) -> np.ndarray:
    """Centred moving average over time: each row becomes the mean of the rows within
    +- window_s / 2 of it (seconds, not frames). Same shape, and dtype when floating.

    One track's rows, sorted by time. Rows count equally (an average of what was seen, not
    weighted by frame time). window_s <= 0 returns the values unchanged.
    """
    values = np.asarray(probabilities)
    times, probs = track_arrays(timestamps_s, values)
    if window_s <= 0 or times.size == 0:
        return values.copy()
    half = window_s / 2 + TIME_EPS
    low = np.searchsorted(times, times - half, side="left")
    high = np.searchsorted(times, times + half, side="right")
    sums = np.vstack([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    smoothed = (sums[high] - sums[low]) / (high - low)[:, None]
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    return smoothed.reshape(values.shape).astype(dtype)


def smooth_tracks(track_ids, timestamps_s, probabilities, window_s: float = 1.0) -> np.ndarray:
    """`smooth` applied to each track of a video's rows; rows in any order, results in input order."""
    tracks = np.asarray(track_ids).reshape(-1)
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    values = np.asarray(probabilities)
    result = np.array(values, dtype=values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64)
    for track in np.unique(tracks):
        rows = np.flatnonzero(tracks == track)
        rows = rows[np.argsort(times[rows], kind="stable")]
        result[rows] = smooth(times[rows], values[rows], window_s)
    return result


def summarize_track(timestamps_s, probabilities, class_names: Sequence[str]) -> TrackSummary:
    """Mean probabilities, dominant label and share of time per class of one track (>= 1 frame)."""
    times, probs = track_arrays(timestamps_s, probabilities)
    check_classes(probs, class_names)
    if times.size == 0:
        raise ValueError("a track has at least one frame")
    weights = frame_weights(times)
    mean = weights @ probs / weights.sum()
    share = np.bincount(probs.argmax(axis=1), weights=weights, minlength=len(class_names)) / weights.sum()
    return TrackSummary(
        n_frames=len(times), first_s=float(times[0]), last_s=float(times[-1]),
        face_time_s=float(times[-1] - times[0]),
        mean_probabilities=by_name(class_names, mean), time_share=by_name(class_names, share),
        dominant=class_names[int(np.argmax(mean))])


def summarize_video(summaries: Iterable[TrackSummary], class_names: Sequence[str]) -> VideoSummary:
    """The video's tracks together, each weighted by its face time (by its frames when no track
    has any: a video of one-frame tracks). No tracks: zeros and dominant ''."""
    summaries = list(summaries)
    if not summaries:
        zeros = by_name(class_names, np.zeros(len(class_names)))
        return VideoSummary(0, 0.0, zeros, dict(zeros), "")
    face_time = np.array([s.face_time_s for s in summaries])
    weights = face_time if face_time.sum() > 0 else np.array([s.n_frames for s in summaries], np.float64)
    weights = weights / weights.sum()
    mean = weights @ np.array([[s.mean_probabilities[c] for c in class_names] for s in summaries])
    share = weights @ np.array([[s.time_share[c] for c in class_names] for s in summaries])
    return VideoSummary(len(summaries), float(face_time.sum()), by_name(class_names, mean),
                        by_name(class_names, share), class_names[int(np.argmax(mean))])


def label_runs(timestamps_s, probabilities, class_names: Sequence[str], min_duration_s: float = 0.5) -> list[Run]:
    """Run-length segments of one track's per-frame top labels (pass smoothed probabilities).

    Runs tile [first, last] and change halfway between two frames. While a run is shorter
    than min_duration_s, the shortest one (the earliest of equals) is merged into the
    neighbour whose label is more probable over the short run's frames (equal: the longer
    neighbour, then the earlier). So no run is shorter than min_duration_s unless the whole
    track is (then it is one run). O(n log n): a noisy two-hour track has tens of thousands
    of one-frame runs.
    """
    times, probs = track_arrays(timestamps_s, probabilities)
    check_classes(probs, class_names)
    if times.size == 0:
        return []
    runs = RunList(probs, frame_edges(times))
    runs.merge_shorter_than(min_duration_s)
    return [Run(float(runs.edges[first]), float(runs.edges[stop]), class_names[label],
                float(probs[first:stop, label].mean()), stop - first) for first, stop, label in runs]


class RunList:
    """A track's label runs as a doubly linked list of (first frame, stop frame, label), merged
    shortest first through a heap whose entries go stale instead of being removed."""

    def __init__(self, probs: np.ndarray, edges: np.ndarray):
        labels = probs.argmax(axis=1)
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        self.probs, self.edges = probs, edges
        self.first = starts.tolist()
        self.stop = np.r_[starts[1:], len(labels)].tolist()
        self.label = labels[starts].tolist()
        self.prev = list(range(-1, len(starts) - 1))
        self.next = list(range(1, len(starts))) + [-1]
        self.count = len(starts)

    def __iter__(self):
        run = 0  # the first run never dies: a merge always keeps the earlier run
        while run != -1:
            yield self.first[run], self.stop[run], self.label[run]
            run = self.next[run]

    def duration(self, run: int) -> float:
        # rounded so runs of equal length compare equal whatever the float error of the edges
        return round(float(self.edges[self.stop[run]] - self.edges[self.first[run]]), 9)

    def merge_shorter_than(self, min_duration_s: float) -> None:
        minimum = round(min_duration_s, 9)
        heap = [(self.duration(r), self.first[r], r) for r in range(self.count) if self.duration(r) < minimum]
        heapq.heapify(heap)
        while heap and self.count > 1:
            duration, first, run = heapq.heappop(heap)
            if self.first[run] < 0 or (duration, first) != (self.duration(run), self.first[run]):
                continue  # stale: the run grew or was absorbed since this entry was pushed
            run = self.relabel(run, self.neighbour_label(run))
            if self.duration(run) < minimum:
                heapq.heappush(heap, (self.duration(run), self.first[run], run))

    def neighbour_label(self, run: int) -> int:
        """The label a short run takes: its more probable neighbour, then the longer, then the earlier."""
        frames = self.probs[self.first[run]:self.stop[run]]
        neighbours = [n for n in (self.prev[run], self.next[run]) if n != -1]
        best = max(neighbours, key=lambda n: (frames[:, self.label[n]].mean(), self.duration(n), n == self.prev[run]))
        return self.label[best]

    def relabel(self, run: int, label: int) -> int:
        """Give `run` a neighbour's label and merge it with the neighbours that have it; the run left."""
        self.label[run] = label
        if self.prev[run] != -1 and self.label[self.prev[run]] == label:
            run = self.absorb(self.prev[run], run)
        if self.next[run] != -1 and self.label[self.next[run]] == label:
            self.absorb(run, self.next[run])
        return run

    def absorb(self, keep: int, gone: int) -> int:
        """`gone` (the run after `keep`) becomes part of `keep`."""
        self.stop[keep], self.next[keep] = self.stop[gone], self.next[gone]
        if self.next[gone] != -1:
            self.prev[self.next[gone]] = keep
        self.first[gone] = -1  # marks it dead for the heap's stale entries
        self.count -= 1
        return keep


def webvtt(runs_by_track: Mapping[int, Sequence[Run]], *, digits: int = 2) -> str:
    """WebVTT subtitles of label runs: one cue per run, "track 0: happy (0.83)", in time order
    (then by track). Times are rounded to the millisecond; a cue of no length (a one-frame
    track) lasts 1 ms, since WebVTT wants an end after the start."""
    cues = sorted(((track, run) for track, runs in runs_by_track.items() for run in runs),
                  key=lambda cue: (cue[1].start_s, cue[1].end_s, cue[0]))
    lines = ["WEBVTT", ""]
    for track, run in cues:
        start_ms = round(run.start_s * 1000)
        end_ms = max(round(run.end_s * 1000), start_ms + 1)
        lines += [f"{vtt_time(start_ms)} --> {vtt_time(end_ms)}",
                  cue_text(f"track {track}: {run.label} ({run.confidence:.{digits}f})"), ""]
    return "\n".join(lines)


def vtt_time(milliseconds: int) -> str:
    """HH:MM:SS.mmm (hours keep growing past 99)."""
    seconds, ms = divmod(int(milliseconds), 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


def cue_text(text: str) -> str:
    """Escaped for a cue payload: '&', '<' and '>' would start markup or a '-->'."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def check_classes(probs: np.ndarray, class_names: Sequence[str]) -> None:
    if probs.shape[1] != len(class_names):
        raise ValueError(f"{probs.shape[1]} probability columns for {len(class_names)} class names")


def by_name(class_names: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {name: float(value) for name, value in zip(class_names, values)}
