"""The pictures of `fer-ray label-videos`: a face thumbnail per track on each timeline PNG, and
with `--annotate 1` an annotated MP4 for the first video of the listing only, whose frames are
the sampled frames with each face's box drawn where frames/ says the face is."""
from __future__ import annotations

import json
import posixpath

import av
import cv2
import numpy as np
import pytest

from fer_ray import cli, storage
from fer_ray.vision.chart import timeline_png
from fer_ray.vision.draw import track_colour
from fer_ray.vision.video import decode_segment
from tests import video_faces
from tests.integration.helpers import read_output, run_file

pytestmark = pytest.mark.integration

# Haar misses the synthetic faces on some frames: a track may go unseen for up to 2 s
ARGS = ["--checkpoint", "pretrained", "--segment-s", "2", "--fps", "5", "--max-lost-s", "2"]
FIRST, SECOND = "a_two_faces.mp4", "b_expression.mp4"  # the listing's order: FIRST is annotated
THUMBNAIL_STRIP = 900 // 8  # the timeline's left column (1 : 7 of its 900 px)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("picture-videos")
    video_faces.two_faces(folder / FIRST, seconds=3.0)  # two segments of 2 s each: a border to cross
    video_faces.expression_change(folder / SECOND, seconds=3.0)
    return folder


@pytest.fixture(scope="module")
def output(ray_cluster, videos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pictures") / "out")
    assert cli.main(["label-videos", "--input", str(videos), "--output", out, *ARGS, "--annotate", "1"]) == 0
    return out


def rows_of(output: str, folder: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in read_output(output, folder).to_pylist():
        rows.setdefault(posixpath.basename(row["video_uri"]), []).append(row)
    return rows


def test_only_the_first_video_is_annotated(output):
    videos = {name: rows[0] for name, rows in rows_of(output, "videos").items()}
    first, second = videos[FIRST], videos[SECOND]
    assert first["status"] == second["status"] == "ok"
    assert first["annotate_error"] == "" and second["annotated"] == second["annotate_error"] == ""
    run = posixpath.dirname(posixpath.dirname(first["webvtt"]))
    stem = posixpath.basename(first["webvtt"])[:-len(".vtt")]
    assert first["annotated"] == storage.join(run, "annotated", stem + ".mp4")
    assert [posixpath.basename(f) for f in storage.list_files(storage.join(run, "annotated"))] == [stem + ".mp4"]
    summary = json.loads(storage.read_bytes(run_file(output, "_summary.json")))
    assert summary["annotated"] == 1 and summary["annotated_uri"] == storage.join(run, "annotated")


def test_annotated_frames_are_the_sampled_frames_with_boxes_drawn(output, videos):
    video = rows_of(output, "videos")[FIRST][0]
    with av.open(storage.resolve(video["annotated"])[1]) as container:
        drawn = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    sampled = list(decode_segment(str(videos / FIRST), 0.0, float("inf"), 5.0))
    assert len(drawn) == len(sampled) == video["frames_sampled"] > 0
    assert {image.shape for _, image in drawn} == {(video["height"], video["width"], 3)}
    start = sampled[0].timestamp_s
    np.testing.assert_allclose([t for t, _ in drawn], [f.timestamp_s - start for f in sampled], atol=1e-3)
    faces = rows_of(output, "frames")[FIRST]
    assert {f["track_id"] for f in faces} == {0, 1}
    frame_of = {round(f.timestamp_s, 6): k for k, f in enumerate(sampled)}
    for face in faces:
        k = frame_of[round(face["timestamp_s"], 6)]
        box_edges_drawn(drawn[k][1], sampled[k].image, face["bbox"], track_colour(face["track_id"]))


def box_edges_drawn(annotated: np.ndarray, original: np.ndarray, bbox, colour) -> None:
    """The box's left and bottom edges are in the track's colour in the annotated frame (after
    H.264), and were not in the video (the top edge may lie under the caption band)."""
    x0, _, x1, y1 = (int(round(v)) for v in bbox)
    height, width = annotated.shape[:2]
    ys = np.arange(max(int(bbox[1]) + 4, 0), min(y1 - 3, height))
    xs = np.arange(max(x0 + 4, 0), min(x1 - 3, width))
    edges = [(ys, np.full(len(ys), min(x0, width - 1)))]
    if y1 < height:
        edges.append((np.full(len(xs), y1), xs))
    target = np.array(colour, np.float64)
    for rows, cols in edges:
        now = np.abs(annotated[rows, cols].astype(np.float64) - target).mean()
        before = np.abs(original[rows, cols].astype(np.float64) - target).mean()
        assert now < 45 and before > 90, (bbox, now, before)


def test_each_timeline_shows_a_thumbnail_per_track(output):
    """The job's PNG against one drawn from its frames/ rows with black squares for faces: they
    differ inside the thumbnail column only, and there a lot (the faces)."""
    videos, frames = rows_of(output, "videos"), rows_of(output, "frames")
    for name, tracks in ((FIRST, 2), (SECOND, 1)):
        video = videos[name][0]
        curves = {}
        for track in sorted({f["track_id"] for f in frames[name]}):
            mine = sorted((f for f in frames[name] if f["track_id"] == track), key=lambda f: f["timestamp_s"])
            curves[track] = (np.array([f["timestamp_s"] for f in mine]),
                             np.array([f["smoothed"] for f in mine], np.float32))
        assert len(curves) == tracks
        blank = timeline_png(curves, video["classes"], title=name,
                             thumbnails={track: np.zeros((64, 64), np.uint8) for track in curves})
        job = storage.read_bytes(video["webvtt"].replace("/webvtt/", "/timelines/")[:-len(".vtt")] + ".png")
        difference = np.abs(png_pixels(job) - png_pixels(blank)).max(axis=2)
        assert not difference[:, THUMBNAIL_STRIP:].any(), name  # the plots are the same
        changed = difference[:, :THUMBNAIL_STRIP] > 40
        assert changed.sum() > 2000 * tracks, name  # a face, not a few pixels
        panel = difference.shape[0] // tracks
        assert all(changed[k * panel:(k + 1) * panel].any() for k in range(tracks)), name  # one in each panel


def png_pixels(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.int32)
