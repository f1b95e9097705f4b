"""Video datasets into clips, without Ray: label files, time-even frame picking (VFR too), the
two video layouts' listings, film strips, and the clip stage called directly on local videos."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from fer_ray import labels, schema
from fer_ray.config import ConfigError, PreprocessConfig
from fer_ray.datasets import Lister, baum2, video_folder
from fer_ray.sample_videos import encode_avi, label_text
from fer_ray.schema import Status
from fer_ray.vision import tracking
from fer_ray.vision.draw import INVALID_COLOUR, film_strips
from fer_ray.vision.synthetic_face import draw_face, identity_for
from fer_ray.vision.video import clip_times, decode_nearest, nearest_frames
from tests.videos import irregular_times_ms, number_in, write_video

HAPPY, SURPRISE = labels.CANONICAL_INDEX["happy"], labels.CANONICAL_INDEX["surprise"]


# ------------------------------------------------------------------ label files

@pytest.mark.parametrize("data, label", [
    (b"   5.0000000e+00\n", HAPPY),   # CK+'s own float form: the seed read ' ' from it
    (b"5\n", HAPPY), (b"7", SURPRISE), (b"0.0", labels.CANONICAL_INDEX["neutral"]),
    (b"\xef\xbb\xbf5\r\n", HAPPY),   # a byte-order mark and a Windows line end, as Notepad saves it
])
def test_label_files_in_either_form_give_the_ck_class(data, label):
    assert labels.parse_ckplus_code(data) == (label, "")


@pytest.mark.parametrize("data, words", [
    (b"", "empty"), (b"  \n", "empty"), (b"happy", "not a number"), (b"5 6", "not a number"),
    (b"8", "outside CK+ coding 0-7"), (b"-1", "outside"), (b"2.5", "outside"), (b"nan", "outside"),
    (b"inf", "outside"), (b"1.0000000e+01", "outside"),  # 10: the seed's first character would have read 1 (anger)
    (b"\xff\xfe5\x00", "not a number"),  # UTF-16: not what CK+ or BAUM-2 write
])
def test_bad_label_files_say_why(data, words):
    label, error = labels.parse_ckplus_code(data)
    assert label == labels.UNKNOWN and words in error


def test_sample_label_files_use_both_forms():
    assert label_text("happy", float_form=True).decode().strip() == "5.0000000e+00"
    assert label_text("happy", float_form=False) == b"5\n"


# ------------------------------------------------------------------ picking frames by time

def brute_force_nearest(times, targets):
    """Nearest frame per target by scanning all of them (ties: the earlier frame)."""
    times = np.asarray(times)
    return np.array([int(np.flatnonzero(np.abs(times - t) == np.abs(times - t).min())[0]) for t in targets])


def test_clip_times_are_even_over_the_window_like_the_seeds_indices():
    np.testing.assert_allclose(clip_times(0.0, 2.0, 4), [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(clip_times(1.0, 1.6, 3), [1.0, 1.2, 1.4])
    frames = np.arange(48) / 24  # 2 s at 24 fps: the seed's step 48 // 12 = 4 gives frames 0, 4, 8 ...
    assert nearest_frames(frames, clip_times(0.0, 2.0, 12)).tolist() == list(range(0, 48, 4))
    with pytest.raises(ValueError):
        clip_times(1.0, 1.0, 4)


def test_nearest_frames_follow_time_under_variable_frame_rate():
    times = np.array(irregular_times_ms(60, seed=3)) / 1000
    targets = clip_times(times[0], times[-1] + 0.04, 16)
    picked = nearest_frames(times, targets)
    np.testing.assert_array_equal(picked, brute_force_nearest(times, targets))
    counted = np.round(np.linspace(0, 59, 16)).astype(int)  # what picking by index would give
    assert not np.array_equal(picked, counted)  # the irregular gaps move the picks


def test_fewer_frames_than_targets_repeat_frames_and_ties_go_earlier():
    assert nearest_frames([0.0, 0.1, 0.2], clip_times(0.0, 0.3, 6)).tolist() == [0, 0, 1, 1, 2, 2]
    assert nearest_frames([0.0, 1.0], [0.5]).tolist() == [0]


@pytest.mark.parametrize("kind", ["cfr_bframes", "vfr", "window"])
def test_decode_nearest_returns_the_nearest_frames_of_a_sequential_decode(tmp_path, kind):
    if kind == "vfr":
        times_ms = irregular_times_ms(80, seed=1)
        path = write_video(tmp_path / "vfr.mp4", frames=80, times_ms=times_ms)
        times, start, end = np.array(times_ms) / 1000, 0.0, times_ms[-1] / 1000 + 0.05
    else:  # H.264 with B-frames at 25 fps; the window starts past keyframes, so the decode seeks
        path = write_video(tmp_path / "cfr.mp4", frames=150, rate=25, options={"g": "25", "bf": "2"})
        times, (start, end) = np.arange(150) / 25, ((3.0, 5.0) if kind == "window" else (0.0, 6.0))
    targets = clip_times(start, end, 12)
    frames = decode_nearest(str(path), targets)
    expected = brute_force_nearest(times, targets)
    assert [number_in(frame.image) for frame in frames] == expected.tolist()
    np.testing.assert_allclose([frame.timestamp_s for frame in frames], times[expected], atol=1e-3)


# ------------------------------------------------------------------ listings

def touch(root, relative: str, data: bytes = b"x") -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def listed(layout_module, root) -> dict[str, dict]:
    cfg = PreprocessConfig(layout=layout_module.DATASET, input=str(root), output="/unused")
    return {os.path.relpath(row["source_uri"], root): row for row in layout_module.list_inputs(cfg, Lister())}


def test_baum2_listing_accounts_for_every_name(tmp_path):
    for subject in ("S001", "S002", "S003", "S004"):
        touch(tmp_path, f"{subject}/avi/001.avi")
        touch(tmp_path, f"{subject}/emotion/001.txt", b"5")
    touch(tmp_path, "S001/avi/002.AVI")              # no label file
    touch(tmp_path, "S002/emotion/007.txt", b"3")    # a label file without its clip
    touch(tmp_path, "S003/avi/notes.doc")
    touch(tmp_path, "S005/emotion/001.txt", b"1")    # a subject without avi/
    touch(tmp_path, "readme.txt")
    os.symlink(tmp_path / "gone.avi", tmp_path / "S004/avi/dangling.avi")
    touch(tmp_path, os.fsdecode(b"S004/avi/bad\xff.avi"))
    rows = listed(baum2, tmp_path)
    status = {name: row["status"] for name, row in rows.items()}
    assert status == {
        "S001/avi/001.avi": "", "S002/avi/001.avi": "", "S003/avi/001.avi": "", "S004/avi/001.avi": "",
        "S001/avi/002.AVI": Status.MISSING_ANNOTATION, "S002/emotion/007.txt": Status.SKIPPED,
        "S003/avi/notes.doc": Status.UNSUPPORTED_FORMAT, "S005": Status.NO_VIDEOS,
        "S005/emotion/001.txt": Status.SKIPPED,
        "readme.txt": Status.UNSUPPORTED_FORMAT, "S004/avi/dangling.avi": Status.DANGLING_LINK,
        "S004/avi/bad\\xff.avi": Status.BAD_NAME}
    assert rows["S001/avi/001.avi"]["sidecar"].endswith("S001/emotion/001.txt")
    assert rows["S001/avi/001.avi"]["subject"] == "S001" and "emotion" in rows["S005"]["error"]
    assert "S001/emotion/002.txt" in rows["S001/avi/002.AVI"]["error"]
    # only clips take part in the subject split: stray files would count as subjects of their own
    assert rows["S002/emotion/007.txt"]["split"] == rows["S005"]["split"] == rows["readme.txt"]["split"] == ""
    split_of = {}
    for row in rows.values():
        if row["subject"] and not row["status"]:
            assert split_of.setdefault(row["subject"], row["split"]) == row["split"]
    assert set(split_of.values()) >= {"train"}


def test_baum2_annotate_reads_the_number_or_gives_bad_label():
    files = {"a": b"   6.0000000e+00\n", "b": b"", "c": b"12"}
    rows = {key: {"sidecar": key, "status": "", "error": "", "label": -1} for key in files}
    for row in rows.values():
        baum2.annotate(row, files.__getitem__)
    assert rows["a"]["label"] == labels.CANONICAL_INDEX["sad"] and not rows["a"]["status"]
    assert rows["b"]["status"] == rows["c"]["status"] == Status.BAD_LABEL and "empty" in rows["b"]["error"]


def test_video_folder_listing_labels_by_folder_name(tmp_path):
    touch(tmp_path, "happiness/a.mp4")
    touch(tmp_path, "Surprised/b.MKV")
    touch(tmp_path, "agreeing/c.avi")
    touch(tmp_path, "happiness/cover.jpg")
    touch(tmp_path, os.fsdecode(b"sad/bad\xfe.mp4"))
    touch(tmp_path, "loose.mp4")
    rows = listed(video_folder, tmp_path)
    assert rows["happiness/a.mp4"]["label"] == HAPPY and not rows["happiness/a.mp4"]["status"]
    assert rows["Surprised/b.MKV"]["label"] == SURPRISE
    assert rows["agreeing/c.avi"]["status"] == Status.UNKNOWN_CLASS
    # a video outside any class folder: the message says where the class is read from
    assert rows["loose.mp4"]["status"] == Status.UNKNOWN_CLASS
    assert f"unknown class folder {tmp_path.name!r} (the class is the name of the folder holding the file" in (
        rows["loose.mp4"]["error"])
    assert rows["happiness/cover.jpg"]["status"] == Status.UNSUPPORTED_FORMAT
    assert "a video file" in rows["happiness/cover.jpg"]["error"] and ".avi" in rows["happiness/cover.jpg"]["error"]
    assert rows["sad/bad\\xfe.mp4"]["status"] == Status.BAD_NAME
    assert {row["split"] for row in rows.values() if not row["status"]} <= {"train", "val", "test"}


# ------------------------------------------------------------------ tracks and pictures

def test_the_clip_follows_the_track_with_most_faces_then_the_largest():
    small, big = [0, 0, 10, 10], [50, 50, 90, 90]
    assert tracking.largest_track([0, 1, 1, 0, 1], [small, big, big, small, big]) == 1
    assert tracking.largest_track([0, 1], [small, big]) == 1  # as many faces: the larger one
    assert tracking.largest_track([], np.zeros((0, 4))) == -1


def test_film_strips_show_each_clip_in_a_row_with_lost_frames_marked():
    clips = [np.full((4, 6, 6, 1), 200, np.uint8), np.full((4, 6, 6, 3), 90, np.uint8)]
    valid = [np.array([True, False, True, True]), np.ones(4, bool)]
    sheet = film_strips(clips, valid, ["happy / S001 / train", "sad / S002 / test"], scale=2)
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[1] >= 4 * 12 and sheet.shape[0] >= 2 * 12
    red = np.all(sheet == INVALID_COLOUR, axis=2)
    columns = np.flatnonzero(red.any(axis=0))
    assert columns.min() >= 14 and columns.max() < 28  # only the second frame of the first strip
    assert not red[14 + 14:].any()  # nothing red on the second strip
    with pytest.raises(ValueError):
        film_strips([], [], [])


# ------------------------------------------------------------------ the clip stage, no Ray

def face_video(path, frames: int, rate: int = 23) -> None:
    """`frames` frames of a drawn face turning happy, as an AVI."""
    identity = identity_for("clip-stage-test")
    images = [draw_face("happy", identity, 120, color=True, width=160, rng=np.random.default_rng(0),
                        intensity=n / max(frames - 1, 1), noise=0.0)[0] for n in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_avi(images, rate))


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory):
    """The clip stage on a video_folder tree of good and bad videos: {file name: output row}."""
    from fer_ray.stages.base import rows_batch
    from fer_ray.stages.clips import ClipStage

    root = tmp_path_factory.mktemp("clips")
    face_video(root / "happy" / "long.avi", 30)
    face_video(root / "happy" / "short.avi", 5)
    (root / "happy" / "empty.avi").write_bytes(b"")
    (root / "happy" / "random.avi").write_bytes(np.random.default_rng(2).integers(0, 256, 5000, np.uint8).tobytes())
    mkv = write_video(root / "header.mkv", frames=10).read_bytes()
    (root / "happy" / "no_frames.mkv").write_bytes(mkv[:mkv.index(b"\x1f\x43\xb6\x75") + 4])
    (root / "header.mkv").unlink()
    cfg = PreprocessConfig(layout="video_folder", input=str(root), output="/unused", clip_length=12)
    rows = video_folder.list_inputs(cfg, Lister())
    stage = ClipStage(cfg)
    out = stage(rows_batch(rows)).to_pylist()
    late = PreprocessConfig(layout="video_folder", input=str(root), output="/unused", clip_length=12,
                            clip_start_s=5.0)
    long_video = [row for row in rows if row["source_uri"].endswith("long.avi")]
    out += [{**row, "late": True} for row in ClipStage(late)(rows_batch(long_video)).to_pylist()]
    return {os.path.basename(r["source_uri"]) + ("@5s" if r.get("late") else ""): r for r in out}


def test_clip_stage_writes_t_aligned_frames_with_times_and_a_valid_mask(stage_outputs):
    row = stage_outputs["long.avi"]
    assert row["status"] == Status.OK and row["is_clip"] and row["is_manifest"]
    frames = schema.clip_array(row["frames"], row["frame_shape"])
    assert frames.shape == (12, 48, 48, 1) and row["clip_length"] == 12
    assert row["valid"] == [True] * 12 and row["n_valid"] == row["n_faces"] == 12 and not row["repeated"]
    assert row["frame_indices"] == nearest_frames(np.arange(30) / 23, clip_times(0, 30 / 23, 12)).tolist()
    np.testing.assert_allclose(row["timestamps_s"], np.array(row["frame_indices"]) / 23, atol=1e-6)
    assert len(row["landmarks"]) == 12 * 68 * 2 and np.isfinite(row["landmarks"]).all()
    assert row["label_name"] == "happy" and row["fps"] == 23 and row["detector"] == "haar"
    assert frames.std(axis=(1, 2, 3)).min() > 5  # real crops, not blanks


def test_a_video_shorter_than_the_clip_repeats_frames_and_says_so(stage_outputs):
    row = stage_outputs["short.avi"]
    assert row["status"] == Status.OK and row["repeated"] and row["clip_length"] == 12
    assert sorted(set(row["frame_indices"])) == [0, 1, 2, 3, 4]
    assert row["frame_indices"] == sorted(row["frame_indices"])


@pytest.mark.parametrize("name, status", [
    ("empty.avi", "empty_file"), ("random.avi", "not_a_video"), ("no_frames.mkv", "no_frames"),
    ("long.avi@5s", "empty_window"),
])
def test_unusable_videos_get_a_status_and_no_clip(stage_outputs, name, status):
    row = stage_outputs[name]
    assert row["status"] == status and row["error"] and not row["is_clip"] and row["is_manifest"]


def test_following_the_face_between_whole_searches_finds_the_faces_a_whole_search_finds(tmp_path):
    from fer_ray.sample_videos import baum2_clip, baum2_clips
    from fer_ray.stages.base import rows_batch
    from fer_ray.stages.clips import ClipStage

    for subject, stem, name in baum2_clips()[:6]:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / f"{subject}_{stem}.avi").write_bytes(baum2_clip(subject, stem, name))
    out = {}
    for every in (0.0, 1.0):
        cfg = PreprocessConfig(layout="video_folder", input=str(tmp_path), output="/unused", detect_every_s=every)
        out[every] = ClipStage(cfg)(rows_batch(video_folder.list_inputs(cfg, Lister()))).to_pylist()
    for whole, followed in zip(out[0.0], out[1.0]):
        assert whole["source_uri"] == followed["source_uri"] and followed["status"] == Status.OK
        assert followed["valid"] == whole["valid"]
        # near a followed face the detector finds a slightly different box, so dlib's points move a little
        shift = np.abs(np.subtract(followed["landmarks"], whole["landmarks"]))
        assert shift.mean() < 1.0, os.path.basename(whole["source_uri"])  # pixels of the 48 px crop


def test_a_clip_with_too_few_valid_frames_is_refused(tmp_path):
    from fer_ray.stages.base import rows_batch
    from fer_ray.stages.clips import ClipStage

    identity = identity_for("clip-stage-test")
    face = draw_face("sad", identity, 120, color=True, width=160, rng=np.random.default_rng(0), noise=0.0)[0]
    empty = np.full_like(face, 128)
    (tmp_path / "sad").mkdir()
    (tmp_path / "sad" / "mostly_empty.avi").write_bytes(encode_avi([face] * 3 + [empty] * 9, 12))
    cfg = PreprocessConfig(layout="video_folder", input=str(tmp_path), output="/unused", clip_length=12)
    row = ClipStage(cfg)(rows_batch(video_folder.list_inputs(cfg, Lister()))).to_pylist()[0]
    assert row["status"] == Status.TOO_FEW_VALID and "3 of 12" in row["error"] and not row["is_clip"]
    assert row["n_faces"] == 3


def test_clip_fields_are_checked_before_any_work():
    for fields, words in [({"clip_length": 0}, "clip_length"), ({"clip_start_s": -1.0}, "clip_start_s"),
                          ({"clip_start_s": 2.0, "clip_end_s": 1.0}, "clip_end_s"),
                          ({"min_valid_fraction": 1.5}, "min_valid_fraction"),
                          ({"detect_every_s": -0.5}, "detect_every_s: -0.5 must be a finite number of seconds")]:
        with pytest.raises(ConfigError, match=words):
            PreprocessConfig(layout="baum2", input="/in", output="/out", **fields).validate()
    assert PreprocessConfig(clip_length=12, min_valid_fraction=0.5).min_valid_frames == 6


# ------------------------------------------------------------------ the sample archive

def test_sample_clips_are_small_avis_whose_expression_unfolds():
    import av

    from fer_ray.sample_videos import BAUM2_RATE, baum2_clip

    data = baum2_clip("S002", "001", "surprise")
    assert data == baum2_clip("S002", "001", "surprise")  # the same bytes for the same seed
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("mpeg4", 160, 120)
        assert stream.average_rate == BAUM2_RATE
        frames = [frame.to_ndarray(format="gray").astype(np.float32) for frame in container.decode(stream)]
    assert BAUM2_RATE <= len(frames) <= 2 * BAUM2_RATE  # 1-2 s
    start_change = np.abs(frames[1] - frames[0]).mean()  # neutral at the start: only drift
    whole_change = np.abs(frames[-1] - frames[0]).mean()  # neutral to the peak
    assert whole_change > 2 * start_change


def test_sample_archive_lists_every_subject_and_class():
    from fer_ray.sample_videos import BAUM2_CLASSES, baum2_clips

    clips = baum2_clips()
    subjects = {subject for subject, _, _ in clips}
    assert len(subjects) == 10 and len(clips) == 44
    for subject in subjects:
        assert {name for s, _, name in clips if s == subject} == set(BAUM2_CLASSES)
    assert len(baum2_clips(scale=2)) == 84  # 20 subjects, the first twice
