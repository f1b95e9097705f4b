"""`fer-ray label-videos` end to end on local Ray: short synthetic-face videos (an expression
change at a known time, two faces moving, no face) and one file of each kind of bad input,
cut into 2 s segments so every video spans several; local files and a rerun. The same inputs
on the S3 test server, through `ray job submit`: tests/jobs/test_label_videos_job.py."""
from __future__ import annotations

import pathlib
import re
from collections import Counter

import cv2
import numpy as np
import pytest

from fer_ray import cli, storage
from tests import video_faces
from tests.browser import check_page
from tests.integration.helpers import read_output
from tests.videos import write_audio, write_video

pytestmark = pytest.mark.integration

CHANGE_S = 2.5  # expression.mp4: neutral, then sad from here (the pretrained model reads both)
MAX_PIXELS = 100_000  # the run's limit: huge.mp4 (400x300) is over it, the others under
EXPECTED = {"expression.mp4": "ok", "two_faces.mp4": "ok", "empty.mp4": "no_face", "corrupt.mp4": "not_a_video",
            "zero.mp4": "empty_file", "notes.txt": "unsupported", "damaged.mp4": "decode_error",
            "truncated.mp4": "decode_error", "audio.mkv": "no_video_stream", "unknown_codec.mp4": "unknown_codec",
            "no_frames.mkv": "no_frames", "huge.mp4": "too_large"}
# Haar misses the synthetic faces on some frames: a track may go unseen for up to 2 s
ARGS = ["--checkpoint", "pretrained", "--segment-s", "2", "--fps", "5", "--max-pixels", str(MAX_PIXELS),
        "--max-lost-s", "2"]
VTT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


def write_inputs(folder: pathlib.Path) -> pathlib.Path:
    """The good videos and one input of each kind of bad one (EXPECTED says what each must give)."""
    expression = video_faces.expression_change(folder / "expression.mp4", change_s=CHANGE_S).read_bytes()
    video_faces.two_faces(folder / "two_faces.mp4")
    video_faces.no_face(folder / "empty.mp4")
    # seeded: some random bytes read as a subtitle (lrc) container, which is another status
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("not a video")
    # random bytes over the frame data, past the first second: the video's one keyframe is at
    # 0 s, so every segment decodes from there and stops at the damage, keeping what came before
    noise = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    at = len(expression) * 3 // 5
    (folder / "damaged.mp4").write_bytes(expression[:at] + noise + expression[at + len(noise):])
    whole = write_video(folder / "faststart.mp4", frames=100, rate=20,
                               container_options={"movflags": "faststart"})
    data = whole.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # its index says where it should end
    whole.unlink()
    write_audio(folder / "audio.mkv")
    (folder / "unknown_codec.mp4").write_bytes(expression.replace(b"avc1", b"zzzz"))
    mkv = write_video(folder / "header.mkv", frames=10)
    header = mkv.read_bytes()
    (folder / "no_frames.mkv").write_bytes(header[:header.index(b"\x1f\x43\xb6\x75") + 4])  # up to a cluster
    mkv.unlink()
    write_video(folder / "huge.mp4", frames=5, width=400, height=300)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def local_run(ray_cluster, inputs, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("labels") / "out")
    assert cli.main(["label-videos", "--input", str(inputs), "--output", output, *ARGS]) == 0
    return output


def by_name(output: str, folder: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in read_output(output, folder).to_pylist():
        rows.setdefault(row["video_uri"].rsplit("/", 1)[-1], []).append(row)
    return rows


def check_outputs(output: str, without: tuple[str, ...] = ()) -> None:
    """The outputs of a run over write_inputs' files (and others named in `without`)."""
    videos = by_name(output, "videos")
    assert {name: [r["status"] for r in rows] for name, rows in videos.items() if name not in without} == {
        name: [status] for name, status in EXPECTED.items()}
    for name, segments in (("expression.mp4", 3), ("two_faces.mp4", 3), ("empty.mp4", 2)):  # 5, 5 and 3 s
        assert videos[name][0]["n_segments"] == segments and videos[name][0]["frames_sampled"] > 0, videos[name]
    assert videos["two_faces.mp4"][0]["n_tracks"] == 2
    assert videos["expression.mp4"][0]["n_tracks"] == 1
    assert videos["empty.mp4"][0]["n_faces"] == 0 and videos["corrupt.mp4"][0]["error"]
    check_bad_inputs(videos)
    frames = by_name(output, "frames")
    for name, rows in frames.items():
        duration = videos[name][0]["duration_s"]
        assert all(0 <= r["timestamp_s"] < duration for r in rows), name
        keys = Counter((r["track_id"], round(r["timestamp_s"], 6)) for r in rows)
        assert max(keys.values()) == 1, name  # no frame twice, across segment borders too
        assert len(rows) == videos[name][0]["n_faces"]
    for name in ("expression.mp4", "two_faces.mp4"):
        assert {r["segment_index"] for r in frames[name]} == {0, 1, 2}, name
    assert {r["track_id"] for r in frames["two_faces.mp4"]} == {0, 1}
    tracks = by_name(output, "tracks")
    assert len(tracks["two_faces.mp4"]) == 2 and len(tracks["expression.mp4"]) == 1


def check_bad_inputs(videos: dict[str, list[dict]]) -> None:
    """Each bad input's own error; a video that fails part-way keeps what decoded before."""
    damaged = videos["damaged.mp4"][0]
    assert damaged["n_faces"] > 0 and damaged["n_tracks"] == 1
    assert re.match(r"segment [012] \[[0-9.]+ s, [0-9.]+ s\): ", damaged["error"]), damaged["error"]
    truncated = videos["truncated.mp4"][0]
    assert truncated["frames_sampled"] > 0 and "probably truncated" in truncated["error"], truncated
    words = {"audio.mkv": "found: audio (aac)", "unknown_codec.mp4": "not one this FFmpeg build can decode",
             "no_frames.mkv": "video stream has no frames", "zero.mp4": "0 bytes",
             "huge.mp4": f"400x300 = 120000 pixels, over the limit of {MAX_PIXELS}"}
    for name, expected in words.items():
        assert expected in videos[name][0]["error"], videos[name][0]
        assert videos[name][0]["n_faces"] == 0 and videos[name][0]["frames_sampled"] == 0, videos[name][0]


def webvtt_cues(uri: str) -> list[tuple[float, float, str]]:
    lines = storage.read_bytes(uri).decode().split("\n")
    assert lines[0] == "WEBVTT"
    cues = []
    for i, line in enumerate(lines):
        match = VTT_CUE.match(line)
        if match:
            v = [int(x) for x in match.groups()]
            start, end = (v[0] * 3600 + v[1] * 60 + v[2] + v[3] / 1000, v[4] * 3600 + v[5] * 60 + v[6] + v[7] / 1000)
            assert end > start
            cues.append((start, end, lines[i + 1]))
    return cues


def test_every_input_is_labelled_once_with_its_status(local_run):
    check_outputs(local_run)


def test_webvtt_and_the_expression_change(local_run):
    videos = by_name(local_run, "videos")
    cues = webvtt_cues(videos["expression.mp4"][0]["webvtt"])
    assert cues and all(text.startswith("track 0: ") for _, _, text in cues)
    assert len(webvtt_cues(videos["two_faces.mp4"][0]["webvtt"])) >= 2
    for name in ("expression.mp4", "two_faces.mp4", "empty.mp4"):  # a picture per video that was decoded
        picture = storage.read_bytes(videos[name][0]["webvtt"].replace("/webvtt/", "/timelines/")[:-4] + ".png")
        image = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[1] == 900, name
    runs = sorted(by_name(local_run, "segments")["expression.mp4"], key=lambda r: r["start_s"])
    assert runs[0]["label"] == "neutral"
    change = next(r["start_s"] for r in runs if r["label"] == "sad")
    assert abs(change - CHANGE_S) <= 1.0, runs


def test_results_page_shows_every_status_and_one_timeline_per_decoded_video(local_run, tmp_path):
    tracks = {name: rows[0]["n_tracks"] for name, rows in by_name(local_run, "videos").items() if rows[0]["webvtt"]}
    page = check_page(local_run, tmp_path, ["Summary", "Status", "Videos", "Timelines"], min_images=len(tracks))
    assert page.images == len(tracks)
    for name, status in EXPECTED.items():
        assert f"<td>{status}</td>" in page.dom and name in page.dom, name
    assert "damaged.mp4: segment" in page.dom  # an example with where its decoding stopped
    # one timeline per decoded video, those with more tracks first: the ones worth seeing
    shown = [caption.rsplit("-", 1)[0] for caption in re.findall(r"<figcaption>([^<]+)</figcaption>", page.dom)]
    assert sorted(shown) == sorted(tracks) and shown[0] == "two_faces.mp4"
    assert [tracks[name] for name in shown] == sorted(tracks.values(), reverse=True)


def test_a_rerun_is_up_to_date(local_run, inputs, capsys):
    capsys.readouterr()
    assert cli.main(["label-videos", "--input", str(inputs), "--output", local_run, *ARGS]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and f"{len(EXPECTED)} inputs" in out
    check_outputs(local_run)
