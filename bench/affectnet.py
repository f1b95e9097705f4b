"""AffectNet-shaped preprocessing: our Ray Data job vs the same per-image work in a plain Pool.

Input: --rows JPEG face crops in AffectNet's layout (`train_set/images/<id>.jpg` and the four
`<id>_{exp,val,aro,lnd}.npy` annotations), square, their sides drawn from a log-normal around
AffectNet's (median 400 px, 128-2000 px; the drawn faces cycle through --distinct
identities and expressions), JPEG quality 90, written once (not timed). Output 224 px RGB
crops aligned on the annotated landmarks (no detection, as for AffectNet). Alternating for
--repeats rounds:
  ours      `fer-ray preprocess --layout affectnet --size 224 --color rgb` (local Ray; Ray
            start-up excluded, listing, reading, the stages and Parquet writing included:
            the job's own summary);
  baseline  multiprocessing.Pool with the same workers: the parent lists the inputs with our
            lister, each worker runs our FaceStage (which reads local inputs itself; FetchStage
            before it from S3) on batches of rows and drops the result (compute and reads, no
            writing).

    .venv/bin/python bench/affectnet.py --rows 12000
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray import labels, results  # noqa: E402
from fer_ray.config import PreprocessConfig  # noqa: E402
from fer_ray.sample_data import _encode, _face_crop, _npy  # noqa: E402
from fer_ray.vision.synthetic_face import draw_face, identity_for  # noqa: E402

SIDE_MEDIAN, SIDE_SIGMA, SIDE_RANGE = 400, 0.5, (128, 2000)


def make_affectnet(root: str, rows: int, distinct: int, seed: int = 0) -> None:
    """`rows` images and annotations, cycling through `distinct` drawn faces of drawn sizes."""
    rng = np.random.default_rng(seed)
    images, notes = os.path.join(root, "train_set", "images"), os.path.join(root, "train_set", "annotations")
    os.makedirs(images)
    os.makedirs(notes)
    drawn = []
    for i in range(distinct):
        expression = labels.CANONICAL[i % len(labels.CANONICAL)]
        side = int(np.clip(rng.lognormal(np.log(SIDE_MEDIAN), SIDE_SIGMA), *SIDE_RANGE))
        face, points = draw_face(expression, identity_for(f"affectnet-bench-{i}", seed), 256, color=True, rng=rng)
        crop, points = _face_crop(face, points, side, rng.uniform(1.2, 1.4))
        drawn.append((_encode(crop, ".jpg", rgb=True), _npy(str(labels.CANONICAL_INDEX[expression])),
                      _npy(points.astype(np.float64).ravel())))
    for i in range(rows):
        jpeg, exp, lnd = drawn[i % distinct]
        with open(os.path.join(images, f"{i}.jpg"), "wb") as f:
            f.write(jpeg)
        for suffix, data in (("exp", exp), ("lnd", lnd), ("val", _npy("0.1")), ("aro", _npy("-0.2"))):
            with open(os.path.join(notes, f"{i}_{suffix}.npy"), "wb") as f:
                f.write(data)


def config(root: str, out: str, workers: int) -> PreprocessConfig:
    cfg = PreprocessConfig(layout="affectnet", input=root, output=out, workers=workers)
    cfg.face.size, cfg.face.color = 224, "rgb"
    return cfg


def run_ours(root: str, out: str, workers: int) -> float:
    cmd = [sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "affectnet", "--input", root,
           "--output", out, "--workers", str(workers), "--size", "224", "--color", "rgb"]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"our job failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return results.read_commit(out).summary()["images_per_s"]


_stages = None


def _init_worker(cfg: PreprocessConfig) -> None:
    global _stages
    from fer_ray.stages.face import FaceStage
    from fer_ray.stages.fetch import FetchStage

    _stages = (FetchStage(cfg), FaceStage(cfg))  # FaceStage sets OpenCV to one thread, as in the actors


def _one_batch(batch: dict) -> int:
    fetch, face = _stages
    if face.fetcher:  # inputs on a file system: the face stage reads them, as in our job
        return face(batch).num_rows
    from ray.data.block import BlockAccessor

    fetched = BlockAccessor.for_block(fetch(batch)).to_batch_format("numpy")
    return face(fetched).num_rows


def run_pool(root: str, workers: int) -> float:
    from fer_ray import datasets

    cfg = config(root, root + "-unused", workers)
    start = time.perf_counter()
    table = datasets.list_inputs(cfg).rows
    batches = [{name: column.to_numpy(zero_copy_only=False) for name, column in
                zip(part.column_names, part.columns)} for part in
               (table.slice(i, cfg.batch_size) for i in range(0, table.num_rows, cfg.batch_size))]
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (cfg,)) as pool:
        faces = sum(pool.imap_unordered(_one_batch, batches))
    if faces < table.num_rows:
        raise SystemExit(f"the Pool made {faces} rows of {table.num_rows} inputs")
    return table.num_rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--distinct", type=int, default=240, help="distinct drawn faces the rows cycle through")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "affectnet")
        make_affectnet(root, args.rows, args.distinct)
        ours, pool = [], []
        for i in range(args.repeats):
            ours.append(run_ours(root, os.path.join(tmp, f"out{i}"), args.workers))
            pool.append(run_pool(root, args.workers))
            print(f"round {i + 1}: ours {ours[-1]:.1f} images/s, pool {pool[-1]:.1f} images/s "
                  f"(a/pool {ours[-1] / pool[-1]:.2f})", flush=True)
    ours_rate, pool_rate = float(np.median(ours)), float(np.median(pool))
    print(f"rows={args.rows} workers={args.workers} cores={os.cpu_count()} repeats={args.repeats} (medians); "
          f"per core: ours {ours_rate / args.workers:.1f} images/s, pool {pool_rate / args.workers:.1f} images/s")
    print(f"bench affectnet: ours={ours_rate:.1f} images/s, baseline={pool_rate:.1f} images/s, "
          f"ratio={ours_rate / pool_rate:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
