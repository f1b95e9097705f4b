"""vision.video: probe, plan_segments, decode_segment on tiny videos made with PyAV.

The central property: decoding a video in 1.5 s segments, each opened on its own through a
pyarrow input file as the job does, gives exactly the frames of one sequential decode
(same timestamps in the same order, bit-equal pixels), for every frame and when sampling,
on H.264 with B-frames, open-GOP MKV, HEVC, variable frame rate and MPEG-TS. The
sequential reference is plain PyAV (container.decode, frame.time), not our code.
"""
from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pyarrow.fs as pafs
import pytest

from fer_ray.vision import video
from fer_ray.vision.video import VideoError, decode_segment, plan_segments, probe
from tests.videos import irregular_times_ms, number_in, pattern, write_audio, write_video

FRAMES, RATE = 150, 25  # 6 s at 25 fps
VFR_TIMES_MS = irregular_times_ms(FRAMES)
KINDS = {
    "h264_bframes.mp4": dict(options={"bf": "3", "g": "25"}),
    "h264_open_gop.mkv": dict(options={"x264-params": "open-gop=1:keyint=25:bframes=3"}),
    "hevc.mp4": dict(codec="libx265", options={"preset": "ultrafast",
                                               "x265-params": "log-level=none:keyint=25:bframes=3"}),
    "h264_vfr.mp4": dict(options={"bf": "2", "g": "25"}, times_ms=VFR_TIMES_MS),
    "h264.ts": dict(options={"bf": "3", "g": "25"}),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def videos(folder):
    return {name: write_video(folder / name, frames=FRAMES, rate=RATE, **options) for name, options in KINDS.items()}


def open_input(path):
    """What the job does: a pyarrow random-access file (read by range on S3)."""
    return pafs.LocalFileSystem().open_input_file(str(path))


def reference(path, fps):
    """Plain PyAV: every frame in decoder order, then the slot rule; (times, RGB images)."""
    with av.open(str(path)) as container:
        frames = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    if fps:
        slots = [math.floor(time * fps + 1e-9) for time, _ in frames]
        frames = [frame for i, frame in enumerate(frames) if i == 0 or slots[i] != slots[i - 1]]
    return [time for time, _ in frames], [image for _, image in frames]


def segmented(path, fps, segment_s=1.5, **kwargs):
    info = probe(open_input(path))
    segments = plan_segments(info.duration_s, segment_s, info.start_s)
    frames = [frame for start, end in segments for frame in decode_segment(open_input(path), start, end, fps, **kwargs)]
    return segments, frames


def error_of(function, *args, **kwargs) -> VideoError:
    with pytest.raises(VideoError) as caught:
        function(*args, **kwargs)
    return caught.value


def segment_error(*args, **kwargs) -> VideoError:
    return error_of(lambda: list(decode_segment(*args, **kwargs)))


def frames_then_error(source) -> tuple[list, VideoError]:
    """Decode a whole damaged video: the frames it yielded, and the error it ended with."""
    frames = []
    with pytest.raises(VideoError) as caught:
        frames.extend(decode_segment(source, -math.inf, math.inf, 0))
    return frames, caught.value


def decode_all(path, **kwargs):
    return list(decode_segment(path, -math.inf, math.inf, 0, **kwargs))


# ------------------------------------------------------------------ segments = sequential decode

@pytest.mark.parametrize("fps", [0, 5])
@pytest.mark.parametrize("name", KINDS)
def test_segments_together_equal_a_sequential_decode(videos, name, fps):
    times, images = reference(videos[name], fps)
    segments, frames = segmented(videos[name], fps)
    assert len(segments) >= 4 and segments[-1][1] == math.inf
    assert [frame.timestamp_s for frame in frames] == times
    for frame, image in zip(frames, images):
        np.testing.assert_array_equal(frame.image, image)
    if fps == 0:
        assert len(frames) == FRAMES
        assert [number_in(frame.image) for frame in frames] == list(range(FRAMES))


@pytest.mark.parametrize("fps", [0, 5])
def test_a_seek_that_lands_too_late_is_retried_further_back(videos, monkeypatch, fps):
    """MPEG-TS seeks land on a keyframe after the target (here up to a GOP late); with no
    preroll to absorb that, the segment must notice and seek again, and still be exact."""
    seeks = []
    original = video._seek
    monkeypatch.setattr(video, "_seek", lambda *args: seeks.append(args[2]) or original(*args))
    times, images = reference(videos["h264.ts"], fps)
    segments, frames = segmented(videos["h264.ts"], fps, preroll_s=0)
    assert len(seeks) > len(segments)  # some segment seeked twice
    assert [frame.timestamp_s for frame in frames] == times
    for frame, image in zip(frames, images):
        np.testing.assert_array_equal(frame.image, image)


def test_sampling_keeps_the_first_frame_of_each_slot(videos):
    frames = decode_all(str(videos["h264_bframes.mp4"]))
    sampled = list(decode_segment(str(videos["h264_bframes.mp4"]), 0, math.inf, fps=5))
    assert [number_in(frame.image) for frame in sampled] == list(range(0, FRAMES, 5))
    assert [frame.frame_index for frame in sampled] == list(range(0, FRAMES, 5))
    assert [frame.frame_index for frame in frames] == list(range(FRAMES))


def test_a_border_inside_a_slot_keeps_its_frame_once(videos):
    """Segments split at 1.1 s, inside the slot [1.0, 1.2) at 5 fps: the frame at 1.0 s
    belongs to the first segment and the second must not keep a second frame of that slot."""
    path = str(videos["h264_bframes.mp4"])
    first = list(decode_segment(path, 0, 1.1, fps=5))
    second = list(decode_segment(path, 1.1, 2.0, fps=5))
    assert [f.timestamp_s for f in first] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [f.timestamp_s for f in second] == [1.2, 1.4, 1.6, 1.8]


def test_variable_frame_rate_uses_each_frames_own_time(videos):
    frames = decode_all(str(videos["h264_vfr.mp4"]))
    assert [frame.timestamp_s for frame in frames] == [ms / 1000 for ms in VFR_TIMES_MS]
    assert [number_in(frame.image) for frame in frames] == list(range(FRAMES))


def test_mpeg_ts_times_start_where_the_stream_starts(videos):
    info = probe(str(videos["h264.ts"]))
    frames = decode_all(str(videos["h264.ts"]))
    assert info.start_s == frames[0].timestamp_s > 0  # MPEG-TS muxers start the clock late
    assert frames[0].frame_index == 0 and frames[-1].frame_index == FRAMES - 1


def test_a_segment_seeks_and_stops_instead_of_decoding_everything(videos, monkeypatch):
    decoded = []
    original = video._decoded

    def counting(container, stream):
        for frame in original(container, stream):
            decoded.append(frame.time)
            yield frame

    monkeypatch.setattr(video, "_decoded", counting)
    frames = list(decode_segment(open_input(videos["h264_bframes.mp4"]), 3.0, 4.5, fps=0, preroll_s=0.5))
    assert [f.timestamp_s for f in frames] == [round(n / RATE, 2) for n in range(75, 113)]
    assert min(decoded) >= 2.0  # the keyframe at 2.0 s (one a second), not the file's start
    assert max(decoded) < 4.5 + 0.2  # stopped at the border, give or take the reorder delay


def test_only_sampled_frames_are_converted(videos, monkeypatch):
    converted = []
    original = video._to_array
    monkeypatch.setattr(video, "_to_array", lambda frame, color: converted.append(frame.time) or original(frame, color))
    frames = list(decode_segment(str(videos["hevc.mp4"]), 1.5, 3.0, fps=2))
    assert converted == [frame.timestamp_s for frame in frames] == [1.52, 2.0, 2.52]


def test_reads_by_range_not_the_whole_file(folder, monkeypatch):
    """The last 1.5 s of a 6 s MP4 (index at the end) need about half its bytes: the index,
    the first packets (FFmpeg's stream probe) and the data from the keyframe at 4 s. The
    file is made big with noise, and the read block small, because FFmpeg reads through
    gaps under 32 KiB rather than seek, and reads a whole block at a time."""
    path = write_video(folder / "noisy.mp4", options={"g": "25", "bf": "3"}, noise=60)
    monkeypatch.setattr(video, "READ_BLOCK", 4096)
    source = CountingFile(open_input(path))
    frames = list(decode_segment(source, 4.5, math.inf, fps=0, preroll_s=0.5))
    assert [number_in(frame.image) for frame in frames] == list(range(113, FRAMES))  # 4.52 .. 5.96 s
    assert path.stat().st_size > 100_000 and source.bytes_read < 0.6 * path.stat().st_size


class CountingFile:
    """A file object that counts the bytes read through it."""

    def __init__(self, inner):
        self.inner, self.bytes_read = inner, 0

    def read(self, size=-1):
        data = self.inner.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset, whence=0):
        return self.inner.seek(offset, whence)

    def tell(self):
        return self.inner.tell()


def test_grey_is_the_luma_of_the_rgb_frame(videos):
    path = str(videos["h264_bframes.mp4"])
    rgb = next(decode_segment(path, 2.0, 3.0, fps=1)).image
    gray = next(decode_segment(path, 2.0, 3.0, fps=1, color="gray")).image
    assert gray.shape == rgb.shape[:2] and gray.dtype == np.uint8
    luma = rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    assert np.abs(gray - luma).mean() < 3


@pytest.mark.parametrize("pixel_format", sorted(video.LUMA_FIRST_FORMATS))
@pytest.mark.parametrize("color_range", [0, 1, 2])  # unspecified, limited (video), full (JPEG)
def test_grey_read_from_the_luma_plane_equals_ffmpegs_conversion(pixel_format, color_range):
    # An odd size, so that the plane's rows are padded beyond the frame's width.
    rgb = np.random.default_rng(1).integers(0, 256, (121, 161, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pixel_format, dst_color_range=color_range)
    grey = video._grey(frame)
    assert grey.shape == (121, 161) and grey.dtype == np.uint8 and grey.flags.c_contiguous
    assert np.abs(grey.astype(int) - frame.to_ndarray(format="gray")).max() <= 1


def test_probe_through_a_file_object_and_a_path_agree(videos):
    for name in KINDS:
        path = videos[name]
        assert probe(open_input(path)) == probe(str(path)) == probe(path)


def test_probe_fields(videos):
    info = probe(open_input(videos["h264_bframes.mp4"]))
    assert (info.codec, info.width, info.height, info.rotation, info.has_audio) == ("h264", 64, 48, 0, False)
    assert abs(info.duration_s - FRAMES / RATE) <= 1 / RATE
    assert info.frame_count == FRAMES and info.average_rate == RATE and info.start_s == 0
    assert info.time_base.denominator > 0
    assert probe(videos["hevc.mp4"]).codec == "hevc"
    mkv = probe(videos["h264_open_gop.mkv"])
    assert mkv.frame_count is None and abs(mkv.duration_s - FRAMES / RATE) <= 1 / RATE  # MKV counts no frames
    vfr = probe(videos["h264_vfr.mp4"])
    assert abs(vfr.duration_s - VFR_TIMES_MS[-1] / 1000) <= 0.08  # plus the last frame's own duration


def test_a_video_with_sound(folder):
    """The audio track is there (has_audio) and ignored: the frames are the same."""
    path = write_video(folder / "with_sound.mp4", options={"g": "25", "bf": "3"}, audio=True)
    info = probe(path)
    assert info.has_audio and abs(info.duration_s - FRAMES / RATE) <= 1 / RATE
    times, images = reference(path, 5)
    _, frames = segmented(path, 5)
    assert [frame.timestamp_s for frame in frames] == times
    for frame, image in zip(frames, images):
        np.testing.assert_array_equal(frame.image, image)


def test_the_same_file_object_serves_probe_then_segments(videos):
    source = open_input(videos["h264_open_gop.mkv"])
    info = probe(source)
    assert len(list(decode_segment(source, info.start_s, 1.0, fps=0))) == RATE


# ------------------------------------------------------------------ rotation

@pytest.mark.parametrize("written, degrees", [(90, 90), (180, 180), (270, 270), (-90, 270)])
def test_rotation_metadata_turns_the_frames_as_players_show_them(folder, written, degrees):
    """-90 is what a phone writes for portrait video; it is the same turn as 270."""
    path = write_video(folder / f"rotated{written}.mp4", frames=10, rotation=written)
    info = probe(open_input(path))
    assert info.rotation == degrees
    assert (info.width, info.height) == ((48, 64) if degrees in (90, 270) else (64, 48))
    frames = decode_all(open_input(path))
    assert frames[3].image.shape == (info.height, info.width, 3)
    # FFmpeg's display matrix turns counter-clockwise, like np.rot90: turning back gives the drawing
    assert number_in(np.rot90(frames[3].image, -degrees // 90)) == 3
    # and OpenCV, whose FFmpeg reader applies the rotation itself, shows the same picture
    capture = cv2.VideoCapture(str(path))
    for _ in range(4):
        ok, bgr = capture.read()
    assert ok
    np.testing.assert_array_equal(frames[3].image, bgr[:, :, ::-1])
    assert decode_all(path, color="gray")[3].image.shape == (info.height, info.width)


# ------------------------------------------------------------------ unusable inputs

@pytest.fixture(scope="module")
def bad(folder, videos):
    """Unusable inputs, by the status each must give."""
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    random_bytes = folder / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    unknown = folder / "unknown_codec.mp4"  # the sample entry's fourcc changed to one no decoder knows
    unknown.write_bytes(videos["h264_bframes.mp4"].read_bytes().replace(b"avc1", b"zzzz"))
    header_only = folder / "no_frames.mkv"  # the MKV header with its track, then a cluster with no block
    mkv = videos["h264_open_gop.mkv"].read_bytes()
    header_only.write_bytes(mkv[:mkv.index(b"\x1f\x43\xb6\x75") + 4])
    return {"empty_file": empty, "not_a_video": random_bytes, "no_video_stream": write_audio(folder / "audio.mka"),
            "unknown_codec": unknown, "no_frames": header_only}


@pytest.mark.parametrize("status, words", [
    ("empty_file", "0 bytes"), ("not_a_video", "not a readable video container"),
    ("no_video_stream", "found: audio (aac)"), ("unknown_codec", "not one this FFmpeg build can decode"),
    ("no_frames", "h264 64x48 video stream has no frames"),
])
def test_unusable_inputs_have_their_status(bad, status, words):
    for source in (str(bad[status]), open_input(bad[status])):
        error = error_of(probe, source)
        assert error.status == status and words in error.message
    if status != "no_frames":  # a segment without frames is simply empty
        assert segment_error(open_input(bad[status]), 0, math.inf, 1).status == status


def test_no_frames_makes_an_empty_segment(bad):
    assert list(decode_segment(bad["no_frames"], 0, math.inf, 0)) == []


def test_too_large_is_refused_before_decoding(videos, monkeypatch):
    monkeypatch.setattr(video, "_decoded", lambda *args: pytest.fail("decoded a frame"))
    path = videos["h264_bframes.mp4"]
    for error in (error_of(probe, path, max_pixels=1000), segment_error(path, 0, 1, 0, max_pixels=1000)):
        assert error.status == "too_large" and "64x48 = 3072 pixels, over the limit of 1000" in error.message


def test_a_missing_file_is_not_the_videos_fault(folder):
    with pytest.raises(FileNotFoundError):
        probe(folder / "missing.mp4")


@pytest.fixture(scope="module")
def truncated(folder):
    """The first half of the bytes of good videos (faststart MP4: its index comes first)."""
    cut = {}
    for name, options in [("indexed.mp4", {"container_options": {"movflags": "faststart"}}),
                          ("index_at_end.mp4", {}), ("stream.mkv", {}), ("stream.ts", {})]:
        whole = write_video(folder / f"whole_{name}", options={"g": "25", "bf": "2"}, **options)
        data = whole.read_bytes()
        cut[name] = folder / f"cut_{name}"
        cut[name].write_bytes(data[: len(data) // 2])
        cut[f"whole_{name}"] = whole
    return cut


def test_truncated_mp4_yields_its_frames_then_decode_error(truncated):
    """FFmpeg reads a cut MP4 as if it ended normally; its index says where it should end."""
    frames, error = frames_then_error(open_input(truncated["indexed.mp4"]))
    assert error.status == "decode_error" and "probably truncated" in error.message
    assert 10 < len(frames) < FRAMES
    assert f"ends at {frames[-1].timestamp_s:.3f} s" in error.message
    assert [number_in(frame.image) for frame in frames] == list(range(len(frames)))
    # a segment wholly inside what is left is fine; one past the cut says so too
    assert len(list(decode_segment(open_input(truncated["indexed.mp4"]), 0, 1.0, 0))) == RATE
    assert segment_error(str(truncated["indexed.mp4"]), 4.5, 6.0, 0).status == "decode_error"


def test_mp4_cut_before_its_index_is_not_a_video(truncated):
    assert error_of(probe, truncated["index_at_end.mp4"]).status == "not_a_video"


@pytest.mark.parametrize("name", ["stream.mkv", "stream.ts"])
def test_truncated_mkv_and_ts_end_quietly_with_the_frames_they_have(truncated, name):
    """No index counts their frames, so a cut file ends like a short one. It yields the
    whole file's first frames, bit-equal, except that the B-frames whose data lay past
    the cut are missing before the last anchor frame that made it."""
    frames = decode_all(open_input(truncated[name]))
    whole = dict(zip(*reference(truncated[f"whole_{name}"], 0)))
    times = [frame.timestamp_s for frame in frames]
    assert 10 < len(frames) < FRAMES
    assert times[:-1] == list(whole)[: len(frames) - 1] and times[-1] in whole
    for frame in frames:
        np.testing.assert_array_equal(frame.image, whole[frame.timestamp_s])


def test_corrupt_data_yields_the_frames_before_it_then_decode_error(folder, videos):
    """400 random bytes over the frame data (the MP4's index is at its end): FFmpeg refuses
    the damaged packet, the segment stops there. Every frame it gave is bit-equal to the
    undamaged file's, and the message says when it stopped."""
    path = videos["h264_bframes.mp4"]
    data = path.read_bytes()
    whole = dict(zip(*reference(path, 0)))
    noise = np.random.default_rng(2).integers(0, 256, 400, dtype=np.uint8).tobytes()
    for offset in (2_000, 6_000, 10_000):
        damaged = folder / f"damaged_{offset}.mp4"
        damaged.write_bytes(data[:offset] + noise + data[offset + len(noise):])
        frames, error = frames_then_error(open_input(damaged))
        assert error.status == "decode_error" and f"after the frame at {frames[-1].timestamp_s:.3f} s" in error.message
        assert 0 < len(frames) < FRAMES
        for frame in frames:
            np.testing.assert_array_equal(frame.image, whole[frame.timestamp_s])


def test_a_damaged_index_never_raises_anything_but_video_error(folder, videos):
    data = videos["h264_bframes.mp4"].read_bytes()
    noise = np.random.default_rng(3).integers(0, 256, 400, dtype=np.uint8).tobytes()
    for offset in (40, len(data) - 1500, len(data) - 600):  # the file type box, the index (moov)
        damaged = folder / f"damaged_index_{offset}.mp4"
        damaged.write_bytes(data[:offset] + noise + data[offset + len(noise):])
        try:
            assert len(decode_all(open_input(damaged))) <= FRAMES
        except VideoError as error:
            assert error.status in ("decode_error", "not_a_video", "no_frames")


# ------------------------------------------------------------------ plan_segments and arguments

def test_plan_segments():
    assert plan_segments(6.0, 1.5) == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5), (4.5, math.inf)]
    assert plan_segments(6.2, 1.5)[-1] == (6.0, math.inf)
    assert plan_segments(1.0, 60.0) == [(0.0, math.inf)]
    assert plan_segments(None) == plan_segments(math.nan) == [(0.0, math.inf)]
    assert plan_segments(2.0, 1.0, start_s=1.4) == [(1.4, 2.4), (2.4, math.inf)]
    with pytest.raises(ValueError, match="segment_s"):
        plan_segments(10.0, 0)


def test_bad_arguments_raise_value_error(videos):
    path = videos["h264_bframes.mp4"]
    for kwargs, words in [(dict(color="bgr"), "color"), (dict(fps=-1), "fps"), (dict(start_s=2, end_s=1), "empty"),
                          (dict(preroll_s=-1), "preroll_s")]:
        arguments = dict(start_s=0, end_s=1, fps=0) | kwargs
        with pytest.raises(ValueError, match=words):
            list(decode_segment(path, **arguments))


def test_pattern_round_trips():
    assert [number_in(pattern(n)) for n in (0, 1, 77, 149, 255)] == [0, 1, 77, 149, 255]
