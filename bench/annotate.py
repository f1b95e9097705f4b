"""What `label-videos --annotate` adds to a video: the reduce's annotated MP4 against the
decode it is built on.

One synthetic video (two faces moving, --seconds long at 25 fps, --width x --height), faces
known at every sampled frame (no detection: this measures drawing and encoding):
  ours      decode the frames sampled at --fps, draw each face's box and caption, encode H.264
            (vision.annotate: what LabelVideoStage.annotate runs);
  baseline  decode the same sampled frames only (vision.video.decode_segment), as a segment does.
Rounds alternate; the best round of each is kept. Printed: sampled frames per second for both;
the ratio is the share of the decode's speed the annotated video keeps (target: drawing
and encoding cost at most twice the decode). No Ray needed.

    .venv/bin/python bench/annotate.py --seconds 20 --width 640 --height 360 --fps 5
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray.vision.annotate import H264Writer, annotated_frames, marks_by_time  # noqa: E402
from fer_ray.vision.video import decode_segment  # noqa: E402
from tests import video_faces  # noqa: E402

RATE = 25


def make_video(path: str, seconds: float, width: int, height: int) -> list[tuple[int, int]]:
    """Two faces moving across a grey frame; returns each frame's left x of the two tiles."""
    tiles = video_faces.face_tile("neutral", "bench-a"), video_faces.face_tile("happy", "bench-b")
    count = int(seconds * RATE)
    lefts = [(n % (width // 2 - video_faces.TILE), width // 2 + n % (width // 2 - video_faces.TILE))
             for n in range(count)]
    frames = (video_faces.frame_with([(tiles[0], a, 10), (tiles[1], b, 20)], width, height) for a, b in lefts)
    video_faces.encode(path, frames, RATE)
    return lefts


def face_rows(lefts: list[tuple[int, int]]) -> list[dict]:
    """frames/ rows of both faces at each sampled frame's time (every frame's, a superset)."""
    side = video_faces.TILE
    return [{"timestamp_s": n / RATE, "bbox": (x, y, x + side, y + side), "track_id": k, "label": "happy",
             "confidence": 0.9} for n, pair in enumerate(lefts) for k, (x, y) in enumerate(zip(pair, (10, 20)))]


def decode_only(path: str, fps: float) -> int:
    return sum(1 for _ in decode_segment(path, 0.0, float("inf"), fps))


def annotate(path: str, fps: float, marks: dict, out: str) -> int:
    with H264Writer(out) as writer:
        for time_s, image in annotated_frames(decode_segment(path, 0.0, float("inf"), fps), marks):
            writer.write(time_s, image)
    return writer.frames


def best_rate(call, rounds: list[float]) -> float:
    started = time.perf_counter()
    frames = call()
    rounds.append(frames / (time.perf_counter() - started))
    return max(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        video, out = os.path.join(folder, "in.mp4"), os.path.join(folder, "out.mp4")
        marks = marks_by_time(face_rows(make_video(video, args.seconds, args.width, args.height)))
        ours, baseline = [], []
        for _ in range(args.rounds):
            best_rate(lambda: decode_only(video, args.fps), baseline)
            best_rate(lambda: annotate(video, args.fps, marks, out), ours)
        size = os.path.getsize(out)
    o, b = max(ours), max(baseline)
    print(f"{args.seconds:g} s at {RATE} fps, {args.width}x{args.height}, sampled at {args.fps:g} fps; "
          f"annotated MP4 {size / 1e6:.2f} MB; rounds ours {np.round(ours, 1).tolist()}, "
          f"baseline {np.round(baseline, 1).tolist()}")
    print(f"bench annotate: ours={o:.1f} frames/s, baseline={b:.1f} frames/s, ratio={o / b:.2f} (target >= 0.33)")


if __name__ == "__main__":
    main()
