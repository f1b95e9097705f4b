"""label-videos' pictures without Ray: which face stands for a track (thumbnails), the timeline
with them, annotated frames and their H.264 file, which videos are annotated, and the reduce's
annotation of videos that stop part-way, cannot be read, or go to S3."""
from __future__ import annotations

import io
import os

import av
import cv2
import numpy as np
import pytest

from fer_ray import storage
from fer_ray.config import ConfigError, LabelVideosConfig, RetryConfig
from fer_ray.pipelines.label_videos import mark_annotated
from fer_ray.schema import VIDEO_INPUTS, row
from fer_ray.stages.video import LabelVideoStage, ReduceSettings, keep_thumbnails, thumbnails
from fer_ray.vision.annotate import H264Writer, annotated_frames, marks_by_time
from fer_ray.vision.chart import timeline_png
from fer_ray.vision.decode import decode_image
from fer_ray.vision.draw import track_colour
from fer_ray.vision.video import DecodedFrame
from tests.videos import write_video

CLASSES = ["angry", "happy", "neutral"]


def crop(value: int) -> np.ndarray:
    return np.full((8, 8), value, np.uint8)


def segment_face(local_track: int, det_score: float, owned: bool, value: int) -> dict:
    return {"local_track": local_track, "det_score": det_score, "owned": owned,
            "face": crop(value).tobytes(), "face_shape": (8, 8, 1)}


def test_a_segment_keeps_one_thumbnail_per_local_track_its_best_owned_face():
    faces = [segment_face(0, 0.99, False, 10),  # the overlap before the segment: not its own
             segment_face(0, 0.6, True, 20), segment_face(0, 0.8, True, 30), segment_face(1, 0.7, True, 40)]
    keep_thumbnails(faces)
    kept = [f["thumbnail"] for f in faces]
    assert kept[0] == kept[1] == b""
    assert decode_image(kept[2])[0, 0, 0] == 30 and decode_image(kept[3])[0, 0, 0] == 40
    keep_thumbnails([])  # a segment without faces


def test_the_reduce_shows_the_best_thumbnail_of_each_video_track():
    def face(det_score: float, value: int | None) -> dict:
        return {"det_score": det_score, "thumbnail": b"" if value is None else cv2.imencode(".png", crop(value))[1]
                .tobytes()}
    kept = [(0, face(0.9, None)), (0, face(0.7, 70)), (0, face(0.8, 80)), (1, face(0.5, 50)), (2, face(0.9, None))]
    shown = thumbnails(kept)
    assert sorted(shown) == [0, 1]  # track 2 carried none (its best face was in no segment's picks)
    assert shown[0][0, 0].tolist() == [80] * 3 and shown[1][0, 0].tolist() == [50] * 3
    assert thumbnails([]) == {}


def timeline(thumbs) -> np.ndarray:
    times = np.linspace(0, 4, 21)
    probabilities = np.stack([np.linspace(0, 1, 21), np.linspace(1, 0, 21), np.full(21, 0.2)], axis=1)
    curves = {0: (times, probabilities), 3: (times[:10], probabilities[:10])}
    picture = timeline_png(curves, CLASSES, title="v.mp4", thumbnails=thumbs)
    return cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR).astype(np.int32)


def test_the_timeline_shows_each_tracks_face_at_the_left_of_its_panel():
    face = np.zeros((48, 48, 3), np.uint8)
    face[:, :, 0] = 255  # pure red: its own colour in the picture, not one the curves use
    with_faces = timeline({0: face, 3: face})
    blank = timeline({0: np.full((48, 48), 255, np.uint8), 3: np.full((48, 48), 255, np.uint8)})
    assert with_faces.shape == blank.shape and with_faces.shape[1] == 900
    difference = np.abs(with_faces - blank).max(axis=2)
    assert not difference[:, 900 // 8:].any()  # the plots are the same
    red = (with_faces[:, :, 2] > 200) & (with_faces[:, :, :2] < 60).all(axis=2)  # BGR
    half = red.shape[0] // 2
    assert red[:half].sum() > 1000 and red[half:].sum() > 1000  # one face in each panel
    assert red[:, 900 // 8:].sum() == 0
    one = timeline({3: face})  # a track without a thumbnail gets a blank square
    assert ((one[:, :, 2] > 200) & (one[:, :, :2] < 60).all(axis=2))[:half].sum() == 0


def frames(count: int, width: int = 61, height: int = 40) -> list[DecodedFrame]:
    return [DecodedFrame(0.5 + 0.2 * k, 4 + k, np.full((height, width, 3), 128, np.uint8)) for k in range(count)]


def test_annotated_frames_draw_the_faces_of_their_own_time_only():
    faces = [{"timestamp_s": 0.7, "bbox": (10, 12, 30, 38), "track_id": 1, "label": "happy", "confidence": 0.8}]
    drawn = list(annotated_frames(frames(3), marks_by_time(faces)))
    assert [t for t, _ in drawn] == pytest.approx([0.5, 0.7, 0.9])
    assert (drawn[0][1] == 128).all() and (drawn[2][1] == 128).all()
    assert tuple(drawn[1][1][25, 10]) == track_colour(1)


def test_h264_writer_keeps_count_times_and_size(tmp_path):
    path = str(tmp_path / "a.mp4")
    with H264Writer(path) as writer:
        for frame in frames(4):
            writer.write(frame.timestamp_s, frame.image)
    assert writer.frames == 4
    with av.open(path) as container:
        decoded = list(container.decode(video=0))
        assert container.streams.video[0].codec_context.name == "h264"
    assert [f.time for f in decoded] == pytest.approx([0.0, 0.2, 0.4, 0.6], abs=1e-3)  # from the first frame
    assert (decoded[0].width, decoded[0].height) == (62, 40)  # 61 padded: 4:2:0 needs even sizes


def test_h264_writer_completes_the_file_when_its_input_fails(tmp_path):
    path = str(tmp_path / "cut.mp4")
    with pytest.raises(RuntimeError, match="stopped"):
        with H264Writer(path) as writer:
            for frame in frames(2):
                writer.write(frame.timestamp_s, frame.image)
            raise RuntimeError("decoding stopped")
    with av.open(path) as container:
        assert len(list(container.decode(video=0))) == 2


def test_the_first_n_videos_by_uri_are_annotated():
    rows = [row(VIDEO_INPUTS, video_uri=uri, status=status) for uri, status in
            (("/v/c.mp4", ""), ("/v/a.txt", "unsupported"), ("/v/b.mp4", ""), ("/v/d.mkv", ""))]
    assert [r["annotate"] for r in mark_annotated(rows, 2)] == [True, False, True, False]
    assert not any(r["annotate"] for r in mark_annotated(rows, 0))
    assert sum(r["annotate"] for r in mark_annotated(rows, 10)) == 3


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_annotate_must_be_a_whole_number_of_videos(value):
    cfg = LabelVideosConfig(input="in", output="out", annotate=value)
    with pytest.raises(ConfigError, match="annotate: "):
        cfg.validate()


def annotate(run_uri: str, video_uri: str) -> tuple[str, str]:
    """The per-video reduce's annotation of a whole video (one segment from 0 s, no faces)."""
    stage = LabelVideoStage(ReduceSettings(run_uri, tuple(CLASSES), 1.0, 0.5, 0.3, 1.0, RetryConfig(), fps=5.0))
    return stage.annotate({"video_uri": video_uri}, [{"start_s": 0.0}], [], "v")


def annotated_frame_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def two_seconds(tmp_path_factory):
    """50 frames at 25 fps (10 sampled at 5 fps), with the index first, and its first half."""
    folder = tmp_path_factory.mktemp("annotate")
    whole = write_video(folder / "whole.mp4", frames=50, container_options={"movflags": "faststart"})
    (folder / "cut.mp4").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    return folder


def test_a_video_that_stops_part_way_is_annotated_up_to_there(two_seconds, tmp_path):
    run = str(tmp_path / "run")
    uri, error = annotate(run, str(two_seconds / "whole.mp4"))
    assert uri == storage.join(run, "annotated", "v.mp4") and error == ""
    assert annotated_frame_count(storage.read_bytes(uri)) == 10
    uri, error = annotate(run, str(two_seconds / "cut.mp4"))
    assert uri and error.startswith("annotated video stops early: ") and "truncated" in error
    assert 0 < annotated_frame_count(storage.read_bytes(uri)) < 10


def test_a_video_that_cannot_be_read_is_not_annotated_and_says_why(two_seconds, tmp_path):
    run = str(tmp_path / "run")
    assert annotate(run, str(two_seconds / "missing.mp4"))[0] == ""
    assert annotate(run, str(two_seconds / "missing.mp4"))[1].startswith("not annotated: FileNotFoundError")
    # seeded: some random bytes read as a subtitle (lrc) container, which is another status
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    uri, error = annotate(run, str(tmp_path / "noise.mp4"))
    assert uri == "" and error.startswith("not annotated: not a readable video container")
    assert not os.path.exists(tmp_path / "run" / "annotated")


def test_annotated_videos_go_to_s3_in_chunks(two_seconds, bucket):
    uri, error = annotate(f"{bucket}/annotate-run", str(two_seconds / "whole.mp4"))
    assert (uri, error) == (f"{bucket}/annotate-run/annotated/v.mp4", "")
    assert annotated_frame_count(storage.read_bytes(uri)) == 10
