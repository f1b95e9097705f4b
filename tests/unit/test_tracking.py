"""Face tracks (fer_ray.vision.tracking): IoU, the per-segment tracker and joining segments; no Ray.

The scene: faces moving smoothly over a 10 s video sampled at 5 fps, cut into 2 s segments of
which each but the first also decodes the 0.4 s before it, as the label-videos job does. Each
segment is tracked on its own, then the video's rows are joined and the overlap rows dropped.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fer_ray.vision.tracking import (
    FaceFollower,
    best_of_each_track,
    distinct_faces,
    iou,
    join_tracks,
    owned_rows,
    pairwise_iou,
    track_faces,
    track_windows,
    video_track_ids,
)

FPS = 5
SECONDS = 10
SEGMENT_S = 2
OVERLAP_S = 0.4


def moving(size: float, start: tuple[float, float], end: tuple[float, float], visible=lambda t: True):
    """A square face whose centre moves linearly from `start` (t=0) to `end` (t=SECONDS)."""
    def box(t: float):
        if not visible(t):
            return None
        x = start[0] + (end[0] - start[0]) * t / SECONDS
        y = start[1] + (end[1] - start[1]) * t / SECONDS
        return np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2])
    return box


def small(visible=lambda t: True):
    """Face A: 60 px, left to right at 25 px/s: slow enough for IoU with the box it had 0.8 s earlier
    to stay above 0.3 (a tracker without motion model: a lost track keeps its last box)."""
    return moving(60, (200, 200), (440, 260), visible)


def large(visible=lambda t: t >= 0.4):
    """Face B: 150 px, right to left from 0.4 s on; crosses A around 5 s (IoU with A <= 0.16)."""
    return moving(150, (560, 180), (80, 260), visible)


def absent(start_s: float, stop_s: float):
    """Visible except for timestamps in [start_s, stop_s)."""
    return lambda t: not start_s - 1e-9 <= t < stop_s - 1e-9


def frame_times(first: int, stop: int) -> list[float]:
    return [i / FPS for i in range(first, stop)]


def scene_rows(times, faces: dict, jitter: float, rng) -> tuple[list, list, list]:
    """(timestamps, boxes, face names) of every visible face on the given frames."""
    stamps, boxes, names = [], [], []
    for t in times:
        for name, path in faces.items():
            box = path(t)
            if box is not None:
                stamps.append(t)
                boxes.append(box + rng.normal(0, jitter, 4) if jitter else box)
                names.append(name)
    return stamps, boxes, names


def segmented(faces: dict, jitter: float = 0.0, segment_s: float = SEGMENT_S, seed: int = 0) -> dict:
    """The video's rows as the per-video reduce gets them: every segment tracked on its own."""
    rng = np.random.default_rng(seed)
    per_segment, overlap = round(segment_s * FPS), round(OVERLAP_S * FPS)
    count = math.ceil(SECONDS * FPS / per_segment)
    columns = {name: [] for name in ("segment", "local", "time", "box", "face", "start", "end")}
    for k in range(count):
        first, stop = max(0, k * per_segment - overlap), min((k + 1) * per_segment, SECONDS * FPS)
        stamps, boxes, names = scene_rows(frame_times(first, stop), faces, jitter, rng)  # jitter: per decode
        columns["local"] += track_faces(stamps, np.array(boxes).reshape(-1, 4)).tolist()
        columns["segment"] += [k] * len(stamps)
        columns["time"] += stamps
        columns["box"] += boxes
        columns["face"] += names
        columns["start"] += [k * segment_s] * len(stamps)
        columns["end"] += [math.inf if k == count - 1 else (k + 1) * segment_s] * len(stamps)
    rows = {name: np.array(values) for name, values in columns.items()}
    rows["box"] = rows["box"].reshape(-1, 4)
    rows["owned"] = owned_rows(rows["time"], rows["start"], rows["end"])
    return rows


def joined(rows: dict) -> dict:
    """The kept (owned) rows with their video-wide track id."""
    mapping = join_tracks(rows["segment"], rows["local"], rows["time"], rows["box"], rows["owned"])
    keep = rows["owned"]
    return {"track": video_track_ids(mapping, rows["segment"][keep], rows["local"][keep]),
            "face": rows["face"][keep], "time": rows["time"][keep]}


def tracks_by_face(result: dict) -> dict[str, list[int]]:
    """Each face's video-wide track ids, in order of time."""
    ids: dict[str, list[int]] = {}
    for face, track in zip(result["face"], result["track"]):
        if not ids.get(face) or ids[face][-1] != track:
            ids.setdefault(face, []).append(int(track))
    return ids


def faces_by_track(result: dict) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for face, track in zip(result["face"], result["track"]):
        found.setdefault(int(track), set()).add(str(face))
    return found


def partition(labels, keys) -> set[frozenset]:
    """Rows grouped by label, as sets of row keys: compares groupings, not the ids' values."""
    groups: dict = {}
    for label, key in zip(labels, keys):
        groups.setdefault(int(label), set()).add(key)
    return {frozenset(group) for group in groups.values()}


# IoU


def test_iou_of_known_boxes():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges share no area
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert iou([0, 0, 10, 10], [2, 2, 7, 7]) == pytest.approx(25 / 100)
    assert iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0  # no area: no overlap, no division by zero


def test_pairwise_iou_matches_the_pairs():
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 100, (7, 2))
    a = np.hstack([corners, corners + rng.uniform(5, 40, (7, 2))])
    b = a[:4] + rng.normal(0, 5, (4, 4))
    table = pairwise_iou(a, b)
    assert table.shape == (7, 4)
    assert all(table[i, j] == pytest.approx(iou(a[i], b[j])) for i in range(7) for j in range(4))
    assert pairwise_iou(np.empty((0, 4)), b).shape == (0, 4)


# The tracker within one segment


def test_lost_track_buffer_edges():
    box = [0, 0, 50, 50]
    assert track_faces([0.0, 1.0], [box, box]).tolist() == [0, 0]  # lost exactly max_lost_s: kept
    assert track_faces([0.0, 1.2], [box, box]).tolist() == [0, 1]
    assert track_faces([0.0, 1.2], [box, box], max_lost_s=1.5).tolist() == [0, 0]
    assert track_faces([0.0, 0.2], [box, [40, 40, 90, 90]]).tolist() == [0, 1]  # IoU 0.02 < 0.3


def test_a_frame_with_more_faces_than_tracks_starts_new_ones_in_input_order():
    a, b, c = [0, 0, 50, 50], [100, 0, 150, 50], [200, 0, 250, 50]
    ids = track_faces([0.0, 0.2, 0.2, 0.2], [b, c, a, b])
    assert ids.tolist() == [0, 1, 2, 0]


def test_rows_in_any_order_give_the_same_tracks():
    stamps, boxes, _ = scene_rows(frame_times(0, 50), {"a": small(), "b": large()}, 2.0, np.random.default_rng(2))
    ids = track_faces(stamps, boxes)
    order = np.random.default_rng(3).permutation(len(stamps))
    shuffled = np.empty_like(ids)
    shuffled[order] = track_faces(np.array(stamps)[order], np.array(boxes)[order])
    assert partition(ids, range(len(ids))) == partition(shuffled, range(len(ids)))


def test_no_faces_no_tracks():
    assert track_faces([], np.empty((0, 4))).tolist() == []
    assert join_tracks([], [], [], np.empty((0, 4))) == {}
    rows = segmented({})
    assert rows["time"].size == 0 and joined(rows)["track"].size == 0


# Joining segments


def test_two_crossing_faces_are_two_tracks_across_all_segments():
    rows = segmented({"a": small(), "b": large()})
    # the paths do cross: the boxes overlap for a while, without passing the IoU threshold
    a, b = small(), large()
    crossing = [iou(a(t), b(t)) for t in frame_times(2, 50)]
    assert max(crossing) > 0.1 and max(crossing) < 0.3
    assert len(set(rows["segment"].tolist())) == 5
    result = joined(rows)
    assert tracks_by_face(result) == {"a": [0], "b": [1]}  # numbered by first appearance: a at 0 s, b at 0.4 s


@pytest.mark.parametrize("jitter", [1.0, 3.0])
def test_jittered_boxes_still_join(jitter):
    """Each segment's decode sees its own noise on the same frames."""
    result = joined(segmented({"a": small(), "b": large()}, jitter=jitter, seed=7))
    assert tracks_by_face(result) == {"a": [0], "b": [1]}


def test_overlap_rows_are_dropped_so_each_face_appears_once_per_frame():
    faces = {"a": small(), "b": large()}
    rows = segmented(faces)
    assert (~rows["owned"]).sum() == 4 * 2 * 2  # 4 borders, 2 overlap frames each, 2 faces
    result = joined(rows)
    stamps, _, names = scene_rows(frame_times(0, 50), faces, 0.0, np.random.default_rng(0))
    assert sorted(zip(result["time"].tolist(), result["face"].tolist())) == sorted(zip(stamps, names))


@pytest.mark.parametrize("gap", [(3.0, 3.6), (1.6, 2.2), (1.8, 2.4)],
                         ids=["inside-a-segment", "the-whole-overlap", "across-a-border"])
def test_a_face_gone_for_less_than_max_lost_keeps_its_track(gap):
    result = joined(segmented({"a": small(absent(*gap)), "b": large()}))
    assert tracks_by_face(result) == {"a": [0], "b": [1]}
    assert not ({gap[0] + i / FPS for i in range(3)} & set(result["time"][result["face"] == "a"].round(6)))


@pytest.mark.parametrize("gap", [(3.0, 6.0), (1.0, 4.0)], ids=["inside", "a-whole-segment"])
def test_a_face_gone_for_3_s_comes_back_as_a_new_track(gap):
    result = joined(segmented({"a": small(absent(*gap)), "b": large()}))
    assert tracks_by_face(result) == {"a": [0, 2], "b": [1]}
    assert all(len(faces) == 1 for faces in faces_by_track(result).values())


def test_a_face_appearing_in_a_later_segment_gets_a_new_id():
    newcomer = moving(100, (300, 420), (380, 420), lambda t: t >= 6.4)
    result = joined(segmented({"a": small(), "b": large(), "c": newcomer}))
    assert tracks_by_face(result) == {"a": [0], "b": [1], "c": [2]}


@pytest.mark.parametrize("gap", [(3.0, 3.6), (1.6, 2.2), (3.0, 6.0)])
@pytest.mark.parametrize("segment_s", [1, 2, 3])
def test_segments_joined_track_as_the_whole_video_does(gap, segment_s):
    """Where the borders fall does not change which rows are one track."""
    faces = {"a": small(absent(*gap)), "b": large(), "c": moving(100, (300, 420), (380, 420), lambda t: t >= 6.4)}
    result = joined(segmented(faces, jitter=1.0, segment_s=segment_s, seed=4))
    stamps, boxes, names = scene_rows(frame_times(0, 50), faces, 0.0, np.random.default_rng(0))
    whole = track_faces(stamps, boxes)
    keys = lambda times, names: [(round(t, 6), n) for t, n in zip(times, names)]  # noqa: E731
    assert partition(result["track"], keys(result["time"], result["face"])) == partition(whole, keys(stamps, names))


def test_ids_cover_every_local_track_and_are_dense():
    rows = segmented({"a": small(absent(3.0, 6.0)), "b": large()})
    mapping = join_tracks(rows["segment"], rows["local"], rows["time"], rows["box"], rows["owned"])
    assert set(mapping) == set(zip(rows["segment"].tolist(), rows["local"].tolist()))
    assert sorted(set(mapping.values())) == [0, 1, 2]


def test_a_track_seen_only_in_overlap_rows_is_numbered_last():
    """Segment 1 alone saw a face in its overlap (segments disagreeing): no kept row, last id."""
    box = [0, 0, 50, 50]
    segment, local = [0, 0, 1, 1], [0, 0, 0, 1]
    times = [1.0, 1.2, 1.2, 1.8]
    boxes = [box, box, box, [300, 300, 350, 350]]
    owned = [True, True, False, False]
    mapping = join_tracks(segment, local, times, boxes, owned)
    assert mapping == {(0, 0): 0, (1, 0): 0, (1, 1): 1}


def test_best_of_each_track_picks_the_highest_eligible_score():
    tracks = [0, 0, 0, 1, 1, 2, 3, 3]
    scores = [0.5, 0.9, 0.7, 0.8, 0.8, 0.99, 0.4, 0.6]
    eligible = [True, True, True, True, True, False, True, True]
    best = best_of_each_track(tracks, scores, eligible)
    assert best.tolist() == [False, True, False, True, False, False, False, True]  # a tie: the first row
    assert best_of_each_track(tracks, scores).tolist()[5]  # track 2 has one when its row counts
    assert best_of_each_track([], []).tolist() == []
    shuffled = np.random.default_rng(0).permutation(len(tracks))
    again = best_of_each_track(np.array(tracks)[shuffled], np.array(scores)[shuffled], np.array(eligible)[shuffled])
    assert sorted(np.array(tracks)[shuffled][again].tolist()) == [0, 1, 3]
    assert sorted(np.array(scores)[shuffled][again].tolist()) == [0.6, 0.8, 0.9]


def test_distinct_faces_keeps_the_first_of_each_overlapping_group_in_the_order_given():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10], [3, 0, 13, 10]]
    assert distinct_faces(boxes, 0.5) == [0, 2]  # IoU of 0 and 4 is 7/13, over 0.5
    assert distinct_faces(boxes, 0.6) == [0, 2, 4]
    assert distinct_faces(boxes[::-1], 0.5) == [0, 2]
    assert distinct_faces(np.zeros((0, 4)), 0.5) == []


def test_a_follower_searches_whole_frames_at_its_interval_and_near_faces_between():
    follower = FaceFollower(every_s=1.0, max_lost_s=0.5)
    assert follower.search(0.0) is None  # the first frame is searched whole
    follower.saw(0.0, [[10, 10, 50, 50], [100, 10, 140, 50]])
    near = follower.search(0.2)
    assert near.shape == (2, 4)
    follower.saw(0.2, [[12, 10, 52, 50]])  # the second face was not found near its box
    near = follower.search(0.4)  # its box of 0.0 is still within max_lost_s; the first face once
    assert [list(box) for box in near] == [[12, 10, 52, 50], [100, 10, 140, 50]]
    follower.saw(0.4, [])
    near = follower.search(0.6)  # 0.0 is now lost longer than max_lost_s
    assert [list(box) for box in near] == [[12, 10, 52, 50]]
    assert follower.search(1.0) is None  # a whole frame again: a face that entered is found here


def test_a_follower_with_nothing_seen_searches_nothing_until_the_next_whole_frame():
    follower = FaceFollower(every_s=1.0, max_lost_s=1.0)
    assert follower.search(0.0) is None
    follower.saw(0.0, np.zeros((0, 4)))
    assert follower.search(0.5).shape == (0, 4)
    assert follower.search(1.2) is None


def test_a_follower_told_to_searches_whole_frames_while_no_face_is_followed():
    follower = FaceFollower(every_s=10.0, max_lost_s=0.5, whole_when_lost=True)
    assert follower.search(0.0) is None
    follower.saw(0.0, np.zeros((0, 4)))
    assert follower.search(0.1) is None  # nothing seen yet: whole again, not nothing
    follower.saw(0.1, [[0, 0, 10, 10]])
    assert follower.search(0.2).shape == (1, 4)
    follower.saw(0.2, [])
    assert follower.search(0.5).shape == (1, 4)  # 0.1 is still within max_lost_s
    assert follower.search(0.7) is None  # lost longer than max_lost_s


def test_a_follower_of_interval_zero_searches_every_frame_whole():
    follower = FaceFollower(every_s=0.0, max_lost_s=1.0)
    for now in (0.0, 0.2, 0.4):
        assert follower.search(now) is None
        follower.saw(now, [[0, 0, 10, 10]])


def test_track_windows_end_at_each_face_and_stay_in_its_track():
    keys = ["a", "b", "a", "a", "b", "a"]
    times = [0.0, 0.0, 0.2, 0.4, 0.2, 0.6]
    windows = track_windows(keys, times, 3)
    assert windows.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 2], [0, 2, 3], [1, 1, 4], [2, 3, 5]]


def test_track_windows_follow_time_not_row_order():
    windows = track_windows(["t"] * 3, [0.4, 0.0, 0.2], 2)
    assert windows.tolist() == [[2, 0], [1, 1], [1, 2]]
