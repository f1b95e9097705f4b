"""Pieces of the label-videos stages that need no Ray."""
from __future__ import annotations

import pytest

from fer_ray.stages.video import chunked, vtt_name
from fer_ray.vision.video import VideoError


def frames_then_failure(n: int):
    yield from range(n)
    raise VideoError("decode_error", f"decoding failed after frame {n - 1}")


def test_chunks_of_the_given_size():
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []


def test_a_failure_part_way_comes_after_the_items_before_it():
    """A segment's decode that fails keeps the frames it gave: a partial chunk comes out first."""
    for n, expected in ((5, [[0, 1, 2], [3, 4]]), (6, [[0, 1, 2], [3, 4, 5]]), (1, [[0]])):
        got = []
        with pytest.raises(VideoError, match=f"after frame {n - 1}"):
            for chunk in chunked(frames_then_failure(n), 3):
                got.append(chunk)
        assert got == expected


def test_file_names_per_video_are_readable_and_unique():
    a, b = vtt_name("s3://b/x/a clip.mp4"), vtt_name("s3://b/y/a clip.mp4")
    assert a != b and a.startswith("a_clip.mp4-") and a.endswith(".vtt")
