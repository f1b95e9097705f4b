"""The sample videos of `fer-ray sample-data` (fer_ray.sample_videos): what expected.json says
is what the decoded videos show, the bytes are the same twice, and the helpers that compare a
labelling with expected.json."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest

from fer_ray import sample_videos
from fer_ray.sample_data import JAFFE_SUBJECTS, write_sample_data
from fer_ray.sample_videos import SAMPLE_SCRIPTS, TILE, face_tile


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    return root, write_sample_data(str(root), layouts=("videos",))


def decoded(path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def test_the_videos_layout_and_its_expected_json(written):
    root, summary = written
    names = sorted(p.name for p in (root / "videos").iterdir())
    assert names == sorted(["one_face.mp4", "two_faces.mp4", "no_face.mp4", "corrupt.mp4", "expected.json"])
    assert summary["videos"]["files"] == len(names)
    expected = json.loads((root / "videos" / "expected.json").read_text())
    assert expected == sample_videos.expected()
    videos = expected["videos"]
    assert {name: v["status"] for name, v in videos.items()} == {
        "one_face.mp4": "ok", "two_faces.mp4": "ok", "no_face.mp4": "no_face", "corrupt.mp4": "not_a_video"}
    assert [len(v["faces"]) for v in videos.values()] == [1, 2, 0, 0]
    one = videos["one_face.mp4"]["faces"][0]
    assert [(c["time_s"], c["label"]) for c in one["changes"]] == [(2.0, "surprise"), (4.0, "happy")]
    assert [(r["start_s"], r["end_s"], r["label"]) for r in one["runs"]] == [
        (0.0, 2.0, "happy"), (2.0, 4.0, "surprise"), (4.0, 6.0, "happy")]
    subjects = {face["subject"] for v in videos.values() for face in v["faces"]}
    assert {s.removeprefix("jaffe-") for s in subjects} <= set(JAFFE_SUBJECTS)  # faces a JAFFE-trained model knows
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(root / "videos" / "corrupt.mp4"))


@pytest.mark.parametrize("name", ["one_face.mp4", "two_faces.mp4"])
def test_each_face_shows_its_expected_expression_at_each_time(written, name):
    """Every decoded frame, at its presentation time, holds each face's tile of the expression
    that expected.json gives for that time, where the script puts it (H.264 loses a little)."""
    root, _ = written
    script, faces = SAMPLE_SCRIPTS[name], sample_videos.expected()["videos"][name]["faces"]
    frames = decoded(root / "videos" / name)
    assert len(frames) == script.seconds * script.rate
    assert frames[0][1].shape == (script.height, script.width, 3)
    for n, (time_s, image) in enumerate(frames):
        assert time_s == pytest.approx(n / script.rate)
        for face, face_script in zip(faces, script.faces):
            label = next(r["label"] for r in face["runs"] if r["start_s"] <= time_s < r["end_s"])
            x, y = face_script.x0 + int(n * face_script.dx), face_script.y0
            shown = image[y:y + TILE, x:x + TILE].astype(int)
            errors = {other: np.abs(shown - face_tile(other, face["subject"])).mean()
                      for other in {r["label"] for r in face["runs"]}}
            assert min(errors, key=errors.get) == label and errors[label] < 4, (name, n, errors)


def test_no_face_video_and_same_bytes_twice(written, tmp_path):
    root, _ = written
    frames = decoded(root / "videos" / "no_face.mp4")
    assert len(frames) == 3 * 8 and frames[0][1].std() > 50  # a picture, not a blank
    again = dict(sample_videos.sample_videos())
    for path in (root / "videos").iterdir():
        assert path.read_bytes() == again[path.name], path.name


def test_label_sequence_merges_neighbours_and_sorts():
    runs = [{"start_s": 2.1, "label": "happy"}, {"start_s": 0.0, "label": "neutral"},
            {"start_s": 3.0, "label": "happy"}, {"start_s": 4.2, "label": "surprise"}]
    assert sample_videos.label_sequence(runs) == [(0.0, "neutral"), (2.1, "happy"), (4.2, "surprise")]
    assert sample_videos.label_sequence([]) == []


def test_tracks_are_matched_to_faces_by_where_they_start():
    frames = [{"video_uri": "s3://b/v/two.mp4", "track_id": 0, "timestamp_s": 0.4, "bbox": [200, 20, 300, 120]},
              {"video_uri": "s3://b/v/two.mp4", "track_id": 0, "timestamp_s": 0.2, "bbox": [190, 20, 290, 120]},
              {"video_uri": "s3://b/v/two.mp4", "track_id": 1, "timestamp_s": 0.0, "bbox": [10, 30, 110, 130]}]
    first = sample_videos.first_box_per_track(frames)
    assert first == {"two.mp4": {0: [190, 20, 290, 120], 1: [10, 30, 110, 130]}}
    assert sample_videos.track_of_face([4, 30, 124, 150], first["two.mp4"]) == 1
    assert sample_videos.track_of_face([196, 10, 316, 130], first["two.mp4"]) == 0
