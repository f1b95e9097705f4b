"""Face tracks in a video: link faces within one segment, then join the segments' tracks.

Pure numpy (and scipy's assignment solver), no Ray. The `label-videos` job cuts each video
into time segments decoded in parallel and finds faces on sampled frames; each segment then
calls `track_faces` on its own faces, and a per-video reduce over small rows (no pixels)
calls `join_tracks`, `video_track_ids` and `owned_rows`.

Data contract
-------------
Segments. Segment k *owns* the time range [start_k, end_k). The owned ranges tile the video:
end_k == start_{k+1}, and the last segment's end is +inf so no late frame is lost. Segment
k > 0 also *decodes* the `overlap_s` before its start, [start_k - overlap_s, end_k): those
frames belong to segment k - 1 and are seen by both.

Sampling. Frames are sampled by their own timestamp (e.g. on a fixed time grid), never by
their position in the segment, so two segments that decode one frame both sample it, find
the same faces, and give it the same timestamp: its presentation time (`frame.time`, the
same float in both decodes; timestamps are compared to the microsecond).

Rows. One row per face on a sampled frame, from every segment, its overlap frames included:
    segment_index  int    k, segments numbered in time order
    local_track    int    from `track_faces` over ALL of that segment's rows (overlap included,
                          so its tracks are alive where they meet the previous segment's)
    timestamp_s    float  the frame's presentation time
    bbox           x0, y0, x1, y1 in pixels of the (rotated) frame
    owned          bool   start_k <= timestamp_s < end_k (`owned_rows`)

Joining. Two local tracks of adjacent segments k, k+1 are one person when, over the
timestamps both segments saw and both tracks have a face, their boxes' mean IoU is at least
`min_iou` (one-to-one, maximising total mean IoU). A person absent from the whole overlap is
still joined when the first segment's track ends and the next one's starts within
`max_lost_s` with IoU >= `min_iou` between the last and the first box: the rule
`track_faces` applies inside a segment, so where a border falls does not change the tracks.
A union-find over these links gives a person crossing several borders one id.

Ids. Video-wide track ids are 0, 1, 2, ... in order of each person's first owned row (ties:
the first row of any kind, then the lowest (segment_index, local_track)). A local track with no owned row that joined
nothing (possible only when two segments disagree on the overlap frames) is numbered after
all others, so the ids of the kept rows are exactly 0 .. n-1.

Overlap rows. After joining, keep only owned rows: each (timestamp, face) then appears
exactly once. Overlap rows (owned False) exist only to join tracks.
"""
from __future__ import annotations

import numpy as np

# Timestamps are seconds as floats: this absorbs the rounding of t +- window arithmetic.
TIME_EPS = 1e-9
MIN_IOU = 0.3     # least box overlap that links a face to a track
MAX_LOST_S = 1.0  # seconds a track may go unseen and still be continued


def iou(a, b):
    """Intersection over union of boxes x0, y0, x1, y1; broadcasts over leading axes.

    Two single boxes give a float. Boxes with no area have IoU 0 with everything.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    union = area(a) + area(b) - inter
    result = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return float(result) if result.ndim == 0 else result


def pairwise_iou(a, b) -> np.ndarray:
    """(n, m) IoU of every box of `a` (n, 4) with every box of `b` (m, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.asarray(iou(a[:, None, :], b[None, :, :])).reshape(len(a), len(b))


def distinct_faces(boxes, same_face_iou: float) -> list[int]:
    """Greedy, in the given order: the indices of the boxes that overlap no box kept before
    them by `same_face_iou` or more (one IoU matrix, not a call per pair: this runs per frame)."""
    if len(boxes) < 2:
        return list(range(len(boxes)))
    overlaps = pairwise_iou(boxes, boxes)
    kept: list[int] = []
    for i in range(len(overlaps)):
        if not (overlaps[i, kept] >= same_face_iou).any():
            kept.append(i)
    return kept


def area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def assign(scores: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the total score, each pair scoring >= minimum.

    Scores under the minimum are zeroed first so they cannot pull the optimum away from
    pairs that count.
    """
    if scores.size == 0:
        return []
    # imported here: scipy.optimize takes 0.24 s to import, and every face actor of every job
    # imports this module (for `distinct_faces`) while only tracking needs the solver
    from scipy.optimize import linear_sum_assignment

    counted = np.where(scores >= minimum, scores, 0.0)
    rows, cols = linear_sum_assignment(counted, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if scores[r, c] >= minimum]


def track_faces(timestamps_s, boxes, *, min_iou: float = MIN_IOU, max_lost_s: float = MAX_LOST_S) -> np.ndarray:
    """Local track id for each face of one segment: 0, 1, ... in order of first appearance.

    One row per face: `timestamps_s` (n,) and `boxes` (n, 4); faces with equal timestamps are
    on one frame. Rows may come in any order; ids come back in input order (a row's position
    is its index). Frame by frame, faces are matched one to one to the tracks seen within the
    last `max_lost_s` seconds, by IoU with each track's last box (total IoU maximised, a pair
    counts only with IoU >= min_iou); a face left over starts a new track. Deterministic.
    """
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ids = np.full(len(times), -1, np.int64)
    last_boxes: list[np.ndarray] = []
    last_times: list[float] = []
    for frame in frames_in_time_order(times):
        now = times[frame[0]]
        # Tracks lost longer than max_lost_s stay in the lists but never match again.
        alive = [t for t, seen in enumerate(last_times) if now - seen <= max_lost_s + TIME_EPS]
        scores = pairwise_iou(np.array([last_boxes[t] for t in alive]).reshape(-1, 4), boxes[frame])
        for track, face in assign(scores, min_iou):
            ids[frame[face]] = alive[track]
        for row in frame:
            if ids[row] < 0:
                ids[row] = len(last_boxes)
                last_boxes.append(boxes[row])
                last_times.append(now)
            last_boxes[ids[row]], last_times[ids[row]] = boxes[row], now
    return ids


class FaceFollower:
    """Where a video's next sampled frame needs a face search: the whole frame every `every_s`
    seconds of video (a new face is found there), and in between only near the faces seen in
    the last `max_lost_s` seconds (detect.detect_near), a fraction of the cost. Frames must come
    in time order; `every_s` 0 searches every frame whole. `whole_when_lost` searches the whole
    frame whenever no face was seen lately (a clip must find its subject on any frame; an
    archive's faceless stretches would cost a whole search per frame)."""

    def __init__(self, every_s: float, max_lost_s: float, same_face_iou: float = MIN_IOU,
                 whole_when_lost: bool = False):
        self.every_s, self.max_lost_s, self.same_face_iou = every_s, max_lost_s, same_face_iou
        self.whole_when_lost = whole_when_lost
        self.last_whole = -np.inf
        self.seen: list[tuple[float, np.ndarray]] = []  # (time, box), oldest first

    def search(self, now: float) -> np.ndarray | None:
        """None: search the whole frame at `now`; else the (N, 4) boxes to search near (N may
        be 0: no face was seen lately, so there is nothing to search until the next whole frame)."""
        if self.every_s <= 0 or now - self.last_whole >= self.every_s - TIME_EPS:
            self.last_whole = now
            return None
        self.seen = [(t, box) for t, box in self.seen if now - t <= self.max_lost_s + TIME_EPS]
        if not self.seen and self.whole_when_lost:
            self.last_whole = now
            return None
        newest_first = np.array([box for _, box in reversed(self.seen)], np.float32).reshape(-1, 4)
        return newest_first[distinct_faces(newest_first, self.same_face_iou)]  # a face's latest box stands for it

    def saw(self, now: float, boxes) -> None:
        """The faces found on the frame at `now`."""
        self.seen.extend((now, np.asarray(box, np.float32)) for box in np.asarray(boxes).reshape(-1, 4))


def track_windows(track_keys, timestamps_s, length: int) -> np.ndarray:
    """(n, length) row indices: for each row, the `length` latest rows of its track up to and
    including it, oldest first; a track's first rows repeat its first row where fewer came
    before (a clip model classifies each face from the window that ends at it). `track_keys`
    (n,) are hashable per row (e.g. video, segment, local track); rows may come in any order."""
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    keys = list(track_keys)
    windows = np.zeros((len(times), length), np.int64)
    tracks: dict = {}
    for row in np.argsort(times, kind="stable"):
        tracks.setdefault(keys[row], []).append(int(row))
    for rows in tracks.values():
        padded = [rows[0]] * (length - 1) + rows
        for k, row in enumerate(rows):
            windows[row] = padded[k:k + length]
    return windows


def frames_in_time_order(times: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by equal timestamp, frames in time order, rows in input order."""
    order = np.argsort(times, kind="stable")
    if order.size == 0:
        return []
    return np.split(order, np.flatnonzero(np.diff(times[order])) + 1)


def owned_rows(timestamps_s, segment_start_s, segment_end_s) -> np.ndarray:
    """True for the rows a segment owns: start <= timestamp < end (per row, or broadcast)."""
    times = np.asarray(timestamps_s, np.float64)
    return (times >= np.asarray(segment_start_s, np.float64)) & (times < np.asarray(segment_end_s, np.float64))


def best_of_each_track(track_ids, scores, eligible=None) -> np.ndarray:
    """True on one row per track: its eligible row with the highest score (the first such row on
    a tie); tracks without an eligible row get none. Picks the face that stands for a track."""
    tracks = np.asarray(track_ids, np.int64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    eligible = np.ones(len(tracks), bool) if eligible is None else np.asarray(eligible, bool).reshape(-1)
    best = np.zeros(len(tracks), bool)
    rows = np.flatnonzero(eligible)
    # by track, then highest score, then row: the first row of each track's run is its best
    order = rows[np.lexsort((rows, -scores[rows], tracks[rows]))]
    firsts = np.r_[True, tracks[order][1:] != tracks[order][:-1]] if len(order) else np.zeros(0, bool)
    best[order[firsts]] = True
    return best


def join_tracks(segment_index, local_track, timestamps_s, boxes, owned=None, *,
                min_iou: float = MIN_IOU, max_lost_s: float = MAX_LOST_S) -> dict[tuple[int, int], int]:
    """{(segment_index, local_track): video-wide track id} for one video's rows.

    See the module docstring for the rows, the joining rule and the numbering. `owned`
    (default: every row) only orders the ids; joining uses every row.
    """
    segments = np.asarray(segment_index, np.int64).reshape(-1)
    if segments.size == 0:
        return {}
    tracks = np.asarray(local_track, np.int64).reshape(-1)
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    owned = np.ones(len(segments), bool) if owned is None else np.asarray(owned, bool).reshape(-1)
    keys, node = np.unique(np.stack([segments, tracks], axis=1), axis=0, return_inverse=True)
    node = node.reshape(-1)
    parent = list(range(len(keys)))
    present = set(segments.tolist())
    for k in sorted(present):
        if k + 1 in present:
            rows_a, rows_b = np.flatnonzero(segments == k), np.flatnonzero(segments == k + 1)
            for a, b in border_links(rows_a, rows_b, node, times, boxes, min_iou, max_lost_s):
                union(parent, a, b)
    component = np.array([find(parent, n) for n in range(len(keys))])
    video_id = number_by_first_appearance(component, node, times, owned)
    return {(int(s), int(t)): int(video_id[n]) for n, (s, t) in enumerate(keys)}


def video_track_ids(mapping: dict[tuple[int, int], int], segment_index, local_track) -> np.ndarray:
    """Per row, the video-wide id `join_tracks` gave its (segment_index, local_track)."""
    pairs = zip(np.asarray(segment_index).reshape(-1).tolist(), np.asarray(local_track).reshape(-1).tolist())
    return np.array([mapping[pair] for pair in pairs], np.int64)


def border_links(rows_a, rows_b, node, times, boxes, min_iou, max_lost_s) -> list[tuple[int, int]]:
    """(node of segment k, node of segment k+1) pairs that are one person: overlap first,
    then a gap across the border for the tracks the overlap left unjoined."""
    links = overlap_links(rows_a, rows_b, node, times, boxes, min_iou)
    joined_a, joined_b = {a for a, _ in links}, {b for _, b in links}
    rows_a = rows_a[~np.isin(node[rows_a], list(joined_a))]
    rows_b = rows_b[~np.isin(node[rows_b], list(joined_b))]
    return links + gap_links(rows_a, rows_b, node, times, boxes, min_iou, max_lost_s)


def overlap_links(rows_a, rows_b, node, times, boxes, min_iou) -> list[tuple[int, int]]:
    """Pairs whose boxes have mean IoU >= min_iou over the timestamps both tracks have."""
    keys_a, keys_b = time_keys(times[rows_a]), time_keys(times[rows_b])
    nodes_a, nodes_b = np.unique(node[rows_a]), np.unique(node[rows_b])
    total = np.zeros((len(nodes_a), len(nodes_b)))
    count = np.zeros_like(total)
    for key in np.intersect1d(keys_a, keys_b):
        faces_a, faces_b = rows_a[keys_a == key], rows_b[keys_b == key]
        cells = np.ix_(np.searchsorted(nodes_a, node[faces_a]), np.searchsorted(nodes_b, node[faces_b]))
        total[cells] += pairwise_iou(boxes[faces_a], boxes[faces_b])
        count[cells] += 1
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return [(int(nodes_a[i]), int(nodes_b[j])) for i, j in assign(mean, min_iou)]


def gap_links(rows_a, rows_b, node, times, boxes, min_iou, max_lost_s) -> list[tuple[int, int]]:
    """Pairs where a track of segment k ends and one of k+1 starts less than max_lost_s later,
    IoU(last box, first box) >= min_iou: what track_faces's lost-track buffer would link."""
    last_a = track_ends(rows_a, node, times, last=True)
    first_b = track_ends(rows_b, node, times, last=False)
    if not last_a or not first_b:
        return []
    nodes_a, nodes_b = sorted(last_a), sorted(first_b)
    ends_a, starts_b = [last_a[n] for n in nodes_a], [first_b[n] for n in nodes_b]
    gap = times[starts_b][None, :] - times[ends_a][:, None]
    scores = np.where((gap > 0) & (gap <= max_lost_s + TIME_EPS), pairwise_iou(boxes[ends_a], boxes[starts_b]), 0.0)
    return [(nodes_a[i], nodes_b[j]) for i, j in assign(scores, min_iou)]


def track_ends(rows: np.ndarray, node: np.ndarray, times: np.ndarray, last: bool) -> dict[int, int]:
    """{node: its last (or first) row} among `rows`."""
    ends: dict[int, int] = {}
    for row in rows[np.argsort(times[rows], kind="stable")]:
        if last or int(node[row]) not in ends:
            ends[int(node[row])] = int(row)
    return ends


def time_keys(times: np.ndarray) -> np.ndarray:
    """Timestamps as integer microseconds: one frame decoded by two segments has one key."""
    return np.rint(times * 1e6).astype(np.int64)


def number_by_first_appearance(component, node, times, owned) -> np.ndarray:
    """Per node, its component's rank by first owned row, then first row, then lowest node.

    Components without an owned row rank last (their first-owned time is +inf).
    """
    roots, component = np.unique(component, return_inverse=True)
    first_owned = np.full(len(roots), np.inf)
    np.minimum.at(first_owned, component[node[owned]], times[owned])
    first_seen = np.full(len(roots), np.inf)
    np.minimum.at(first_seen, component[node], times)
    lowest_node = np.full(len(roots), len(component))
    np.minimum.at(lowest_node, component, np.arange(len(component)))
    rank = np.empty(len(roots), np.int64)
    rank[np.lexsort((lowest_node, first_seen, first_owned))] = np.arange(len(roots))
    return rank[component]


def find(parent: list[int], n: int) -> int:
    while parent[n] != n:
        parent[n] = parent[parent[n]]  # path halving keeps chains of many segments short
        n = parent[n]
    return n


def union(parent: list[int], a: int, b: int) -> None:
    root_a, root_b = find(parent, a), find(parent, b)
    if root_a != root_b:
        parent[max(root_a, root_b)] = min(root_a, root_b)


def largest_track(track_ids, boxes) -> int:
    """The track with the most faces (ties: the larger mean box area, then the lower id): the
    face a clip follows, rather than demanding exactly one face per frame as seed 001 did.
    -1 when there is no face."""
    ids = np.asarray(track_ids, np.int64).reshape(-1)
    if ids.size == 0:
        return -1
    areas = area(np.asarray(boxes, np.float64).reshape(-1, 4))
    candidates = np.unique(ids)
    return int(max(candidates, key=lambda t: (np.sum(ids == t), areas[ids == t].mean(), -t)))
