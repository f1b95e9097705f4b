"""Preprocessing throughput: our Ray Data job vs seed 001's serial loop vs a multiprocessing.Pool.

All three run on the same FER2013-style rows (48x48 grey faces) in one run:
  (a) `fer-ray preprocess --layout fer2013` (Ray Data, local Ray; Ray start-up excluded,
      reading, stages and Parquet writing included);
  (b) seed 001's recipe, serial: upscale to 480x480, Haar face + eye cascades, rotate,
      crop 2.1d x 3.2d, bilateral filter, resize to 48;
  (c) our per-image function (decode + FaceExtractor) in multiprocessing.Pool, same workers
      (pool start-up and model loading included, as actor start-up is in (a)); compute
      only: the pixel strings are handed over in memory and the results are dropped;
  (d) the same job without Ray: the parent streams the CSV with our reader, the Pool's
      workers run our face stage on batches of rows, the parent writes the same faces/
      and manifest/ Parquet files. (a)/(d) is the framework's overhead on equal work;
      (a)/(c) also counts reading and writing as overhead.
(a), (c) and (d) alternate for --repeats rounds and the medians are reported, with a/c of
each round: shared machines drift by tens of percent within minutes, and alternating keeps
both on the same drift (one round's pair is the fairest comparison there is).
The seed loop is serial and steady, so it runs once on the first --seed-rows rows.
The driver's peak RSS is sampled for N and 2N rows to show it does not grow with the input.
The default N is FER2013's real size.

    .venv/bin/python bench/preprocess.py --rows 35887 --workers 2
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray import results  # noqa: E402
from fer_ray.config import FaceConfig, PreprocessConfig  # noqa: E402
from fer_ray.vision.decode import pixels_to_image  # noqa: E402
from fer_ray.vision.faces import FaceExtractor  # noqa: E402


def make_csv(path: str, rows: int) -> list[str]:
    """A FER2013 CSV of `rows` rows, cycling through the sample data's faces."""
    from fer_ray.sample_data import write_sample_data

    with tempfile.TemporaryDirectory() as tmp:
        write_sample_data(tmp)
        lines = open(os.path.join(tmp, "fer2013", "fer2013.csv")).read().strip().splitlines()
    body = [lines[1 + i % (len(lines) - 1)] for i in range(rows)]
    with open(path, "w") as f:
        f.write("\n".join([lines[0], *body]) + "\n")
    return [line.split(",")[1] for line in body]


# ------------------------------------------------------------------ (b) seed 001, serial
FACE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
EYES = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")


def seed_style(pixels: str) -> list[np.ndarray]:
    image = np.array([int(v) for v in pixels.split()], dtype=np.uint8).reshape(48, 48)
    return seed_faces(cv2.resize(image, (480, 480)))


def seed_faces(image: np.ndarray, one_face_only: bool = False) -> list[np.ndarray]:
    """Seed 001's face recipe on a grey image: Haar faces, Haar eyes to level them, rotate, crop
    2.1d x 3.2d, bilateral filter, 48x48. one_face_only: nothing unless exactly one face (its clips)."""
    found = FACE.detectMultiScale(image, 1.3, 5)
    if one_face_only and len(found) != 1:
        return []
    height, width = image.shape
    out = []
    for x, y, w, h in found:
        eyes = EYES.detectMultiScale(image[y:y + h, x:x + w])
        angle, d = 0.0, w / 2.1
        if len(eyes) >= 2:
            (ax, ay, aw, ah), (bx, by, bw, bh) = sorted(eyes[:2], key=lambda e: e[0])
            dx, dy = (bx + bw / 2) - (ax + aw / 2), (by + bh / 2) - (ay + ah / 2)
            angle, d = math.degrees(math.atan2(dy, dx)), max(math.hypot(dx, dy), 1.0)
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        rotated = cv2.warpAffine(image, turn, (width, height))
        cx, cy = x + w / 2, y + h / 2
        crop = rotated[max(0, int(cy - 1.2 * d)):int(cy + 2.0 * d), max(0, int(cx - 1.05 * d)):int(cx + 1.05 * d)]
        if crop.size:
            out.append(cv2.resize(cv2.bilateralFilter(crop, 4, 15, 15), (48, 48), interpolation=cv2.INTER_AREA))
    return out


def run_seed(pixels: list[str]) -> float:
    start = time.perf_counter()
    for p in pixels:
        seed_style(p)
    return len(pixels) / (time.perf_counter() - start)


# ------------------------------------------------------------------ (c) multiprocessing.Pool
_extractor = None


def _init_worker() -> None:
    global _extractor
    cv2.setNumThreads(1)
    _extractor = FaceExtractor(FaceConfig(), "none")


def _pool_one(pixels: str) -> int:
    grey = pixels_to_image(pixels)
    return len(_extractor.extract(grey))


def run_pool(pixels: list[str], workers: int) -> float:
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        pool.map(_pool_one, pixels, chunksize=32)
        return len(pixels) / (time.perf_counter() - start)


# ------------------------------------------------------------------ (d) the same job, Pool
_stage = None


def _init_stage_worker(cfg: PreprocessConfig) -> None:
    global _stage
    from fer_ray.stages.face import FaceStage

    _stage = FaceStage(cfg)  # sets OpenCV to one thread, as in the actors


def _stage_batch(batch: dict):
    return _stage(batch)


def numpy_batches(csv_path: str, batch_size: int):
    """Our FER2013 reader's rows as the face stage's numpy batches (no Ray involved)."""
    from fer_ray.datasets.fer2013 import MAX_ROWS_PER_BLOCK, read_blocks

    for table in read_blocks(csv_path, 0, MAX_ROWS_PER_BLOCK):
        for start in range(0, table.num_rows, batch_size):
            part = table.slice(start, batch_size)
            yield {name: part.column(name).to_numpy(zero_copy_only=False) for name in part.column_names}


def run_pool_job(csv_path: str, out: str, workers: int) -> float:
    """images/s of read -> face stage in a Pool -> faces/ and manifest/ Parquet, written
    by the job's own ShardSink (called directly, one file per ~16 MiB as in the job)."""
    from types import SimpleNamespace

    from fer_ray.pipelines.writer import ShardSink, merge_counts

    cfg = PreprocessConfig(layout="fer2013", input=csv_path, output=out, workers=workers)
    sink = ShardSink(out, face_bytes=cfg.face.size ** 2)
    start, pending, counts = time.perf_counter(), [], []

    def write() -> None:
        counts.append(sink.write(pending, SimpleNamespace(task_idx=len(counts), kwargs={"write_uuid": "pool"})))
        pending.clear()

    with multiprocessing.get_context("spawn").Pool(workers, _init_stage_worker, (cfg,)) as pool:
        for rows in pool.imap(_stage_batch, numpy_batches(csv_path, cfg.batch_size), chunksize=4):
            pending.append(rows)  # the stage's Arrow table, as a Ray block
            if sum(block.num_rows for block in pending) >= sink.min_rows_per_write:
                write()
    if pending:
        write()
    return merge_counts(counts)["inputs"] / (time.perf_counter() - start)


# ------------------------------------------------------------------ (a) our Ray Data job
def run_ours(csv_path: str, out: str, workers: int) -> tuple[float, int]:
    """(images/s from the job's own summary, driver peak RSS in bytes)."""
    cmd = [sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "fer2013", "--input", csv_path,
           "--output", out, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"our job failed: {' '.join(cmd)}")
    summary = results.read_commit(out).summary()
    return summary["images_per_s"], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=35887, help="N (default: FER2013's size)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed-rows", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = os.path.join(tmp, "n.csv"), os.path.join(tmp, "2n.csv")
        pixels = make_csv(small, args.rows)
        make_csv(big, 2 * args.rows)
        ours, pool, pool_job, peaks = [], [], [], []
        for i in range(args.repeats):
            rate, peak = run_ours(small, os.path.join(tmp, f"out{i}"), args.workers)
            ours.append(rate)
            peaks.append(peak)
            pool.append(run_pool(pixels, args.workers))
            pool_job.append(run_pool_job(small, os.path.join(tmp, f"pool{i}"), args.workers))
            print(f"round {i + 1}: ours {ours[-1]:.1f} images/s, pool {pool[-1]:.1f} images/s, "
                  f"pool job {pool_job[-1]:.1f} images/s", flush=True)
        _, peak_2n = run_ours(big, os.path.join(tmp, "out_2n"), args.workers)
        seed = run_seed(pixels[:args.seed_rows])
    print("a/c per round (paired, same drift): " + ", ".join(f"{a / c:.2f}" for a, c in zip(ours, pool))
          + f"; median {np.median(np.divide(ours, pool)):.2f}")
    report(args, float(np.median(ours)), float(np.median(pool)), float(np.median(pool_job)), seed,
           max(peaks), peak_2n)


def report(args, ours: float, pool: float, pool_job: float, seed: float, peak_n: int, peak_2n: int) -> None:
    print(f"rows={args.rows} workers={args.workers} cores={os.cpu_count()} repeats={args.repeats} (medians)")
    print(f"(a) ours (Ray Data job)      {ours:9.1f} images/s")
    print(f"(b) seed 001 serial loop     {seed:9.1f} images/s   a/b = {ours / seed:.2f} (target >= 5)")
    print(f"(c) multiprocessing.Pool     {pool:9.1f} images/s   a/c = {ours / pool:.2f} (target >= 0.8)")
    print(f"(d) same job on a Pool       {pool_job:9.1f} images/s   a/d = {ours / pool_job:.2f}")
    print(f"driver peak RSS: {peak_n / 2**20:.0f} MiB for N rows, {peak_2n / 2**20:.0f} MiB for 2N rows "
          f"(growth {100 * (peak_2n - peak_n) / peak_n:+.1f}%)")
    print(f"bench preprocess_vs_pool: ours={ours:.1f} images/s, baseline={pool:.1f} images/s, "
          f"ratio={ours / pool:.2f} (target >= 0.8)")
    print(f"bench preprocess_vs_pool_job: ours={ours:.1f} images/s, baseline={pool_job:.1f} images/s, "
          f"ratio={ours / pool_job:.2f} (target >= 0.8)")
    print(f"bench preprocess: ours={ours:.1f} images/s, baseline={seed:.1f} images/s, "
          f"ratio={ours / seed:.2f} (target >= 5)")


if __name__ == "__main__":
    main()
