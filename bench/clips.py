"""Clip preprocessing throughput: our `fer-ray preprocess --layout baum2` (local Ray) vs seed 001's
loop, on the same BAUM-2-style sample archive scaled up (`fer-ray sample-data`'s baum2/, --scale
times the subjects).

  ours:     the whole job as users run it (a subprocess; Ray start-up excluded, as the job's own
            clips/s is measured from its run's start: listing, label files, probing, decoding,
            faces on every sampled frame, tracking and Parquet writing included);
  baseline: seed 001's loop in one process: per clip, OpenCV VideoCapture seeking frame by frame to
            the sampled indices (0, step, 2 step ...; step = frames // clip_length), reading each,
            the seed's Haar face recipe per frame (bench/preprocess.py `seed_faces`: Haar face and
            eyes, rotate, crop 2.1d x 3.2d, bilateral filter, 48x48 grey), keeping a frame only when
            exactly one face is found, as the seed did. Label files are read as well.

--frame WxH draws the archive's clips that size instead of the sample's 160x120, and --face-scale
sizes the face in it (draw_face's face_scale; the sample's 0.9 gives a face about 0.44 of the
frame's height: 52 px at 160x120, 157 px with `--frame 640x360`).

Ours does more per frame (dlib's 68 landmarks, a tracker, frames kept even when the face is lost),
so the ratio understates the pipeline's advantage on equal work. Rounds alternate the two
(--repeats) and medians are reported: a shared machine drifts.

    .venv/bin/python bench/clips.py --scale 4 --clip-length 16
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.preprocess import seed_faces  # noqa: E402
from fer_ray import results, sample_videos  # noqa: E402
from fer_ray.sample_data import write_files  # noqa: E402


def seed_clip(path: str, clip_length: int) -> list[np.ndarray]:
    """Seed 001's clip: seek to each sampled index with VideoCapture, read, find the one face."""
    capture = cv2.VideoCapture(path)
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        step = max(total // clip_length, 1)
        faces = []
        for index in range(0, step * clip_length, step):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            if ok:
                faces.extend(seed_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), one_face_only=True))
        return faces
    finally:
        capture.release()


def frame_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 640x360")
    return int(width), int(height)


def write_archive(root: str, args) -> None:
    """The BAUM-2-style sample archive at --scale, its clips drawn at --frame."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        files = sample_videos.baum2_archive(scale=args.scale, pool=pool, size=args.frame, face_scale=args.face_scale)
    write_files(root, files)


def run_seed(archive: str, clip_length: int) -> tuple[float, int]:
    """(clips/s, clips the seed kept: all sampled frames with exactly one face)."""
    clips = sorted(glob.glob(os.path.join(archive, "S*", "avi", "*.avi")))
    start, kept = time.perf_counter(), 0
    for path in clips:
        label = path.replace("/avi/", "/emotion/")[:-len(".avi")] + ".txt"
        if os.path.exists(label):
            open(label).read()
        kept += len(seed_clip(path, clip_length)) == clip_length
    return len(clips) / (time.perf_counter() - start), kept


def run_ours(archive: str, out: str, clip_length: int, workers: int) -> tuple[float, int]:
    """(clips/s from the job's summary, clips written)."""
    cmd = [sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "baum2", "--input", archive,
           "--output", out, "--clip-length", str(clip_length), "--workers", str(workers)]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"our job failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    summary = results.read_commit(out).summary()
    return summary["clips_per_s"], summary["clips"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, help="times the sample archive's 10 subjects")
    parser.add_argument("--clip-length", type=int, default=16, help="frames per clip (the seed trained on 12)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame", type=frame_size, default=sample_videos.BAUM2_SIZE,
                        help="the clips' width x height (default: the sample's 160x120)")
    parser.add_argument("--face-scale", type=float, default=sample_videos.BAUM2_FACE_SCALE,
                        help="the face's size in the frame, as draw_face takes it (default: the sample's 0.9)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "baum2")
        write_archive(archive, args)
        ours, seed = [], []
        for i in range(args.repeats):
            rate, clips = run_ours(archive, os.path.join(tmp, f"out{i}"), args.clip_length, args.workers)
            ours.append(rate)
            seed_rate, seed_kept = run_seed(archive, args.clip_length)
            seed.append(seed_rate)
            print(f"round {i + 1}: ours {rate:.2f} clips/s ({clips} clips written), seed {seed_rate:.2f} clips/s "
                  f"({seed_kept} clips with one face on every sampled frame)", flush=True)
    report(args, float(np.median(ours)), float(np.median(seed)), ours, seed)


def report(args, ours: float, seed: float, ours_rounds: list[float], seed_rounds: list[float]) -> None:
    print("ours/seed per round: " + ", ".join(f"{a / b:.2f}" for a, b in zip(ours_rounds, seed_rounds)))
    print(f"scale={args.scale} frame={args.frame[0]}x{args.frame[1]} face_scale={args.face_scale} "
          f"clip_length={args.clip_length} workers={args.workers} cores={os.cpu_count()} "
          f"repeats={args.repeats} (medians)")
    print(f"ours (Ray Data job)        {ours:8.2f} clips/s")
    print(f"seed 001 loop (one process) {seed:8.2f} clips/s   ratio = {ours / seed:.2f} (target >= 5)")
    print(f"bench clips: ours={ours:.2f} clips/s, baseline={seed:.2f} clips/s, ratio={ours / seed:.2f} (target >= 5)")


if __name__ == "__main__":
    main()
