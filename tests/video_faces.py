"""Short test videos of synthetic faces, written to files: a face whose expression changes at
a known time, two faces moving, no face. The makers live in fer_ray.sample_videos (the
sample data's videos are made by the same code), encoded as the sample's are: one x264 thread
and fixed options. With x264's own thread count the same frames gave different bytes from
run to run, and on some of them Haar lost one of two_faces' faces for a whole segment (a
third track; CI failed on it)."""
from __future__ import annotations

from pathlib import Path

from fer_ray.sample_videos import TILE, FaceScript, VideoScript, encode_mp4, encode_script, face_tile, frame_with

__all__ = ["TILE", "encode", "expression_change", "face_tile", "frame_with", "no_face", "two_faces"]


def encode(path: Path, frames, rate: int) -> Path:
    path.write_bytes(encode_mp4(frames, rate))
    return path


def write(path: Path, script: VideoScript) -> Path:
    path.write_bytes(encode_script(script))
    return path


def expression_change(path: Path, before: str = "neutral", after: str = "sad", change_s: float = 2.5,
                      seconds: float = 5.0, rate: int = 8) -> Path:
    """One face, drifting right by a pixel every other frame, `before` until change_s, then `after`."""
    face = FaceScript("video-a", ((0.0, before), (change_s, after)), x0=10, y0=0, dx=0.5)
    return write(path, VideoScript(180, TILE, seconds, (face,), rate))


def two_faces(path: Path, seconds: float = 5.0, rate: int = 8) -> Path:
    """Two people side by side, moving towards each other (never overlapping)."""
    # Haar finds both subjects on every frame of this encoding ("video-b", the face here before,
    # it missed on 16 of 40 frames)
    left = FaceScript("video-d", ((0.0, "neutral"),), x0=4, y0=10, dx=1)
    right = FaceScript("video-c", ((0.0, "surprise"),), x0=196, y0=0, dx=-1)
    return write(path, VideoScript(320, 140, seconds, (left, right), rate))


def no_face(path: Path, seconds: float = 3.0, rate: int = 8) -> Path:
    return write(path, VideoScript(160, 120, seconds, (), rate))
