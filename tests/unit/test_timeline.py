"""Emotion over time (fer_ray.vision.timeline): smoothing, summaries, label runs, WebVTT; no Ray."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fer_ray.labels import LABEL_SETS
from fer_ray.vision.timeline import (
    Run,
    TrackSummary,
    label_runs,
    smooth,
    smooth_tracks,
    summarize_track,
    summarize_video,
    vtt_time,
    webvtt,
)

CLASSES = LABEL_SETS["fer2013"]  # a model's label set, not the canonical order


def probabilities(labels: list[str], confidence: float = 0.8) -> np.ndarray:
    """Per frame: `confidence` on its label, the rest spread evenly over the other classes."""
    probs = np.full((len(labels), len(CLASSES)), (1 - confidence) / (len(CLASSES) - 1))
    probs[np.arange(len(labels)), [CLASSES.index(label) for label in labels]] = confidence
    return probs


def story(times: np.ndarray) -> list[str]:
    """happy 0-3 s, a 0.2 s sad blip, happy to 5 s, then surprise to 8 s."""
    return ["sad" if 3.0 <= t < 3.2 - 1e-9 else "happy" if t < 5 - 1e-9 else "surprise" for t in times]


# Smoothing


def test_smoothing_a_step_ramps_over_the_window():
    times = np.arange(51) / 5  # 0 .. 10 s at 5 fps
    step = (times >= 5).astype(float)
    smoothed = smooth(times, step, window_s=1.0)
    ramp = (smoothed > 0) & (smoothed < 1)
    # the rows whose +-0.5 s window holds both sides of the step: 4.6 .. 5.2, by fifths
    assert times[ramp] == pytest.approx([4.6, 4.8, 5.0, 5.2])
    assert smoothed[ramp] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert np.all(smoothed[times <= 4.4] == 0) and np.all(smoothed[times >= 5.4] == 1)


@pytest.mark.parametrize("window_s", [0.5, 1.0, 2.0])
def test_the_ramp_is_as_wide_as_the_window_in_seconds_whatever_the_frame_rate(window_s):
    for fps in (10, 50):
        times = np.arange(10 * fps + 1) / fps
        smoothed = smooth(times, (times >= 5).astype(float), window_s)
        ramp = times[(smoothed > 0) & (smoothed < 1)]
        # the window holds both its ends: the ramp lies in [5 - w/2, 5 + w/2), as wide to a frame
        assert 5 - window_s / 2 - 1e-9 <= ramp.min() and ramp.max() < 5 + window_s / 2
        assert ramp.max() - ramp.min() + 1 / fps == pytest.approx(window_s, abs=1 / fps + 1e-9)


def test_window_zero_returns_the_input_unchanged():
    times = np.array([0.0, 0.1, 0.5, 2.0])
    probs = np.random.default_rng(0).dirichlet(np.ones(len(CLASSES)), len(times))
    assert np.array_equal(smooth(times, probs, window_s=0), probs)


def test_a_constant_signal_is_unchanged_with_irregular_frames():
    times = np.sort(np.random.default_rng(1).uniform(0, 10, 60))
    probs = np.tile(np.linspace(0.04, 0.24, len(CLASSES), dtype=np.float32), (60, 1))
    smoothed = smooth(times, probs, window_s=1.0)
    assert smoothed.shape == probs.shape and smoothed.dtype == np.float32
    assert np.allclose(smoothed, probs, atol=1e-6)


def test_the_window_is_in_seconds_not_frames():
    """Dense frames early, one frame 3 s later: that frame is alone in its window."""
    times = np.array([0.0, 0.1, 0.2, 0.3, 3.3])
    values = np.array([0.0, 0.0, 1.0, 1.0, 5.0])
    smoothed = smooth(times, values, window_s=1.0)
    assert smoothed[-1] == 5.0 and smoothed[0] == pytest.approx(0.5)


def test_smoothing_sums_to_one_and_refuses_rows_out_of_order():
    times = np.arange(20) / 5
    probs = np.random.default_rng(2).dirichlet(np.ones(len(CLASSES)), 20)
    assert np.allclose(smooth(times, probs).sum(axis=1), 1)
    with pytest.raises(ValueError, match="sorted"):
        smooth(times[::-1], probs)


def test_smooth_tracks_smooths_each_track_on_its_own():
    rng = np.random.default_rng(3)
    times = np.round(np.sort(rng.uniform(0, 6, 40)), 3)
    tracks = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(len(CLASSES)), 40)
    order = rng.permutation(40)  # the video's rows in any order
    result = smooth_tracks(tracks[order], times[order], probs[order], window_s=1.0)
    for track in range(3):
        mine = tracks[order] == track
        alone = smooth(times[tracks == track], probs[tracks == track], window_s=1.0)
        back = np.argsort(times[order][mine], kind="stable")
        assert np.allclose(result[mine][back], alone)


# Summaries


def test_share_of_time_weighs_each_frame_by_the_time_it_stands_for():
    """Frames at 0, 0.1, 0.2, 1.2, 2.2 stand for 0.05, 0.1, 0.55, 1.0, 0.5 s."""
    times = np.array([0.0, 0.1, 0.2, 1.2, 2.2])
    summary = summarize_track(times, probabilities(["happy"] * 3 + ["sad"] * 2), CLASSES)
    assert summary.time_share["happy"] == pytest.approx(0.7 / 2.2)
    assert summary.time_share["sad"] == pytest.approx(1.5 / 2.2)
    assert sum(summary.time_share.values()) == pytest.approx(1)
    assert summary.dominant == "sad"  # 3 of 5 frames are happy, but sad holds most of the time
    assert summary.mean_probabilities["sad"] == pytest.approx((0.8 * 1.5 + 0.2 / 6 * 0.7) / 2.2)
    assert (summary.n_frames, summary.first_s, summary.last_s) == (5, 0.0, 2.2)
    assert summary.face_time_s == pytest.approx(2.2)


def test_regular_frames_share_by_count_but_the_ends_count_half():
    times = np.arange(11) / 5  # 0 .. 2 s
    summary = summarize_track(times, probabilities(["fear"] * 5 + ["anger"] * 6), CLASSES)
    assert summary.time_share["fear"] == pytest.approx(0.9 / 2.0)  # 0.1 + 4 * 0.2: trapezoid rule
    assert summary.time_share["neutral"] == 0


def test_a_one_frame_track():
    summary = summarize_track([4.2], probabilities(["disgust"]), CLASSES)
    assert summary.face_time_s == 0 and summary.time_share["disgust"] == 1 and summary.dominant == "disgust"
    with pytest.raises(ValueError, match="at least one frame"):
        summarize_track([], np.empty((0, len(CLASSES))), CLASSES)
    with pytest.raises(ValueError, match="class names"):
        summarize_track([0.0], probabilities(["happy"]), CLASSES[:3])


def test_video_summary_weighs_tracks_by_face_time():
    happy = summarize_track(np.arange(31) / 5, probabilities(["happy"] * 31), CLASSES)  # 6 s
    sad = summarize_track(np.arange(11) / 5, probabilities(["sad"] * 11, 0.9), CLASSES)  # 2 s
    video = summarize_video([happy, sad], CLASSES)
    assert video.n_tracks == 2 and video.face_time_s == pytest.approx(8)
    assert video.time_share["happy"] == pytest.approx(0.75) and video.time_share["sad"] == pytest.approx(0.25)
    assert video.mean_probabilities["sad"] == pytest.approx(0.75 * 0.2 / 6 + 0.25 * 0.9)
    assert video.dominant == "happy"


def test_video_summary_without_tracks_or_time():
    empty = summarize_video([], CLASSES)
    assert empty.n_tracks == 0 and empty.dominant == "" and set(empty.time_share) == set(CLASSES)
    blips = [summarize_track([1.0], probabilities(["fear"]), CLASSES),
             summarize_track([2.0], probabilities(["fear"]), CLASSES),
             summarize_track([3.0], probabilities(["anger"]), CLASSES)]
    video = summarize_video(blips, CLASSES)  # no face time anywhere: frames count
    assert video.time_share["fear"] == pytest.approx(2 / 3) and video.dominant == "fear"


# Label runs


@pytest.mark.parametrize("window_s", [0.0, 1.0], ids=["raw", "smoothed"])
def test_a_short_blip_is_merged_and_the_change_is_found_within_one_sample(window_s):
    times = np.arange(41) / 5  # 0 .. 8 s at 5 fps
    probs = smooth(times, probabilities(story(times)), window_s)
    runs = label_runs(times, probs, CLASSES, min_duration_s=0.5)
    assert [run.label for run in runs] == ["happy", "surprise"]
    assert runs[0].start_s == 0 and runs[-1].end_s == 8
    assert runs[0].end_s == runs[1].start_s and abs(runs[0].end_s - 5) <= 0.2
    assert runs[1].confidence == pytest.approx(0.8, abs=0.1) and runs[1].n_frames + runs[0].n_frames == 41


def test_without_a_minimum_the_blip_is_its_own_run():
    times = np.arange(41) / 5
    runs = label_runs(times, probabilities(story(times)), CLASSES, min_duration_s=0)
    assert [run.label for run in runs] == ["happy", "sad", "happy", "surprise"]
    assert runs[1].start_s == pytest.approx(2.9) and runs[1].end_s == pytest.approx(3.1)


def test_a_short_run_joins_its_more_probable_neighbour():
    times = np.arange(21) / 5  # 0 .. 4 s
    labels = ["happy"] * 10 + ["sad"] + ["surprise"] * 10
    probs = probabilities(labels)
    probs[10] = 0.0
    probs[10, [CLASSES.index("sad"), CLASSES.index("surprise"), CLASSES.index("happy")]] = [0.5, 0.35, 0.15]
    runs = label_runs(times, probs, CLASSES)
    assert [(run.label, run.n_frames) for run in runs] == [("happy", 10), ("surprise", 11)]
    assert runs[1].confidence == pytest.approx((0.35 + 10 * 0.8) / 11)


def test_equally_probable_neighbours_the_longer_one_wins():
    times = np.arange(21) / 5
    runs = label_runs(times, probabilities(["anger"] * 6 + ["fear"] + ["neutral"] * 14), CLASSES)
    assert [(run.label, run.n_frames) for run in runs] == [("anger", 6), ("neutral", 15)]


def test_no_run_is_shorter_than_the_minimum_unless_the_track_is():
    rng = np.random.default_rng(5)
    times = np.cumsum(rng.uniform(0.05, 0.4, 200))  # irregular frames
    probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.3, 200)
    for minimum in (0.3, 1.0, 3.0):
        runs = label_runs(times, probs, CLASSES, min_duration_s=minimum)
        assert all(run.duration_s >= minimum - 1e-9 for run in runs)
        assert runs[0].start_s == times[0] and runs[-1].end_s == times[-1]
        assert all(a.end_s == b.start_s and a.label != b.label for a, b in zip(runs, runs[1:]))
    short = label_runs([1.0, 1.2], probabilities(["happy", "sad"]), CLASSES)
    assert len(short) == 1 and short[0].duration_s == pytest.approx(0.2)
    assert label_runs([], np.empty((0, len(CLASSES))), CLASSES) == []


def merged_one_by_one(times, probs, min_duration_s):
    """The rule of label_runs written the slow, obvious way: (first, stop, label) runs."""
    edges = np.concatenate([times[:1], (times[:-1] + times[1:]) / 2, times[-1:]])
    runs = coalesced([(i, i + 1, label) for i, label in enumerate(probs.argmax(axis=1).tolist())])
    while len(runs) > 1:
        durations = [round(edges[stop] - edges[first], 9) for first, stop, _ in runs]
        short = int(np.argmin(durations))
        if durations[short] >= round(min_duration_s, 9):
            break
        first, stop, _ = runs[short]
        neighbours = [n for n in (short - 1, short + 1) if 0 <= n < len(runs)]
        best = max(neighbours, key=lambda n: (probs[first:stop, runs[n][2]].mean(), durations[n], -n))
        runs = coalesced(runs[:short] + [(first, stop, runs[best][2])] + runs[short + 1:])
    return runs


def coalesced(runs):
    merged = []
    for first, stop, label in runs:
        merged[-1:] = [(merged[-1][0], stop, label)] if merged and merged[-1][2] == label \
            else merged[-1:] + [(first, stop, label)]
    return merged


@pytest.mark.parametrize("seed", range(6))
def test_label_runs_merge_as_the_one_by_one_rule_does(seed):
    rng = np.random.default_rng(seed)
    times = np.round(np.cumsum(rng.uniform(0.04, 0.3, 300)), 3) if seed % 2 else np.arange(300) / 10
    probs = smooth(times, rng.dirichlet(np.ones(len(CLASSES)) * 0.2, 300), window_s=0.3 * (seed % 3))
    runs = label_runs(times, probs, CLASSES, min_duration_s=0.8)
    expected = merged_one_by_one(times, probs, 0.8)
    assert len(expected) < 100  # merges happened: 300 noisy frames start as ~250 runs
    assert [(run.n_frames, run.label) for run in runs] == [(stop - first, CLASSES[c]) for first, stop, c in expected]


def test_label_runs_of_a_long_noisy_track_cover_it_with_no_short_run():
    """Two hours at 10 fps of noise: tens of thousands of one-frame runs to merge (the
    one-by-one rule took minutes here; the merge by a heap runs in about 2 s)."""
    rng = np.random.default_rng(9)
    times = np.arange(72_000) / 10
    probs = rng.dirichlet(np.ones(len(CLASSES)), len(times))
    runs = label_runs(times, probs, CLASSES)
    assert all(run.duration_s >= 0.5 - 1e-9 for run in runs)
    assert runs[0].start_s == times[0] and runs[-1].end_s == times[-1]
    assert all(a.end_s == b.start_s for a, b in zip(runs, runs[1:]))
    assert sum(run.n_frames for run in runs) == len(times)


# WebVTT

CUE = re.compile(r"(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})\n"
                 r"track (\d+): ([a-z+]+) \((\d\.\d\d)\)")


def seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_webvtt_cues_are_the_runs_in_time_order():
    times = np.arange(41) / 5
    first = label_runs(times, probabilities(story(times)), CLASSES)
    second = label_runs(times + 2.05, probabilities(["neutral"] * 20 + ["anger"] * 21, 0.6), CLASSES)
    text = webvtt({0: first, 1: second})
    header, *blocks = text.strip("\n").split("\n\n")
    assert header == "WEBVTT"
    cues = [CUE.fullmatch(block) for block in blocks]
    assert all(cues), blocks
    expected = sorted([(run.start_s, 0, run) for run in first] + [(run.start_s, 1, run) for run in second],
                      key=lambda item: item[:2])
    assert len(cues) == len(expected) == 4
    for cue, (_, track, run) in zip(cues, expected):
        assert seconds(*cue.groups()[:4]) == pytest.approx(run.start_s, abs=5e-4)
        assert seconds(*cue.groups()[4:8]) == pytest.approx(run.end_s, abs=5e-4)
        assert (int(cue[9]), cue[10], float(cue[11])) == (track, run.label, pytest.approx(run.confidence, abs=5e-3))
    assert "00:00:04.900 --> 00:00:08.000\ntrack 0: surprise (0.80)\n" in text


def test_webvtt_times_and_edge_cases():
    assert vtt_time(3_725_500) == "01:02:05.500" and vtt_time(0) == "00:00:00.000"
    assert webvtt({}) == "WEBVTT\n"
    lone = Run(start_s=7.25, end_s=7.25, label="a<b", confidence=1.0, n_frames=1)
    assert "00:00:07.250 --> 00:00:07.251\ntrack 3: a&lt;b (1.00)" in webvtt({3: [lone]})


def test_track_summary_is_plain_data():
    summary = summarize_track([0.0, 1.0], probabilities(["happy", "happy"]), CLASSES)
    assert isinstance(summary, TrackSummary) and isinstance(summary.mean_probabilities["happy"], float)
