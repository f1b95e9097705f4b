"""A video's timeline picture (fer_ray.vision.chart), without Ray: its panels, where the
curves land, its time ticks and its limits."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_ray.vision.chart import (
    MAX_TRACKS,
    PALETTE,
    PANEL_LEFT,
    WIDTH,
    nice_ticks,
    panel_boxes,
    time_range,
    timeline_png,
)


def picture(tracks: dict, classes=("neutral", "sad"), **kwargs) -> np.ndarray:
    """The PNG decoded, as RGB."""
    bgr = cv2.imdecode(np.frombuffer(timeline_png(tracks, list(classes), **kwargs), np.uint8), cv2.IMREAD_COLOR)
    return bgr[:, :, ::-1]


def test_a_video_timeline_has_a_panel_per_track_and_says_when_there_is_no_face():
    times = np.linspace(0, 5, 26)
    rising = np.stack([1 - times / 5, times / 5], axis=1)
    one, two = picture({0: (times, rising)}), picture({0: (times, rising), 3: (times, rising[::-1])})
    empty = picture({})
    assert one.shape[1] == two.shape[1] == empty.shape[1] == WIDTH
    assert two.shape[0] > one.shape[0]  # one panel more
    assert len(np.unique(one.reshape(-1, 3), axis=0)) > len(np.unique(empty.reshape(-1, 3), axis=0))
    assert not np.isin(colour_mask(empty, PALETTE[0]), True).any()  # no curve without a face
    assert picture({0: (times, np.zeros((26, 0)))}, classes=()).shape == one.shape  # no classes: no legend


def colour_mask(image: np.ndarray, colour, tolerance: int = 60) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(colour)).max(axis=2) <= tolerance


def test_a_curve_is_drawn_where_its_probability_and_time_are():
    """Class 0 rises from 0 to 1 over the video, class 1 falls: in the panel, class 0's colour
    goes up from left to right (rows count down) and class 1's goes down. The panel's right
    quarter, where the legend is, is left out."""
    times = np.linspace(0, 10, 51)
    rising = times / 10
    image = picture({0: (times, np.stack([rising, 1 - rising], axis=1))}, title="v.mp4")
    x0, y0, x1, y1 = panel_boxes(1, image.shape[0], left=PANEL_LEFT)[0]
    inside = image[y0 + 2:y1 - 1, x0 + 2:x0 + 3 * (x1 - x0) // 4]
    for colour, sign in ((PALETTE[0], -1), (PALETTE[1], 1)):
        rows, cols = np.nonzero(colour_mask(inside, colour))
        assert len(rows) > 300, colour  # a line across the panel
        assert sign * np.corrcoef(cols, rows)[0, 1] > 0.95, colour
        # it starts at the panel's bottom (rising) or top (falling)
        start = rows[cols <= cols.min() + 2]
        assert len(start) and (start.min() > inside.shape[0] - 8 if sign < 0 else start.max() < 8), colour


def test_the_timeline_shows_the_longest_tracks_at_most():
    tracks = {t: (np.linspace(0, 1, 5 + t), np.full((5 + t, 2), 0.5)) for t in range(MAX_TRACKS + 3)}
    height = picture(tracks).shape[0]
    assert height == picture({t: tracks[t] for t in range(MAX_TRACKS)}).shape[0]
    assert height > picture({t: tracks[t] for t in range(MAX_TRACKS - 1)}).shape[0]


@pytest.mark.parametrize("low,high", [(-0.4, 8.4), (0.0, 1.0), (-0.05, 0.05), (12.3, 3601.7), (1e-4, 3e-4)])
def test_time_ticks_are_round_values_inside_the_axis(low, high):
    ticks = nice_ticks(low, high)
    assert 2 <= len(ticks) <= 7
    assert all(low - 1e-9 <= t <= high + 1e-9 for t in ticks)
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 5))


def test_the_time_axis_spans_every_track_with_room_and_is_never_empty():
    assert time_range([np.array([2.0, 6.0]), np.array([1.0, 3.0])]) == pytest.approx((0.75, 6.25))
    low, high = time_range([np.array([4.0])])  # one sampled frame: a second around it
    assert low < 4.0 < high and high - low >= 1.0
    assert time_range([]) == pytest.approx((-0.05, 1.05))
    assert time_range([np.array([2.0, np.nan, 6.0])]) == pytest.approx((1.8, 6.2))  # a gap is no time


def test_a_gap_in_a_curve_is_left_out_and_the_rest_drawn():
    times = np.linspace(0, 10, 51)
    probabilities = np.stack([times / 10, 1 - times / 10], axis=1)
    probabilities[20, 0] = np.nan
    times_with_gap = times.copy()
    times_with_gap[30] = np.nan
    image = picture({0: (times_with_gap, probabilities)}, title="\u8996\u983b \U0001f600")  # glyphs the font lacks
    assert colour_mask(image, PALETTE[0]).sum() > 300 and colour_mask(image, PALETTE[1]).sum() > 300
