"""Synthesis throughput: our Ray Data job vs a serial single-process loop over the same faces.

Input: the JAFFE-style sample at --scale (10 subjects per scale step, 7 expressions, 2-3
takes each), preprocessed once (not timed). Then, alternating for --repeats rounds:
  ours      `fer-ray synthesize` (local Ray; Ray start-up excluded, reading faces/, the
            groupby shuffle, fusion and Parquet writing included; the job's own summary);
  baseline  one process: pyarrow reads faces/, the same fusion code runs subject after
            subject, pyarrow writes one mixed/ file. Same method and pick rule.
Medians are reported, with per-core throughput (ours divided by the Ray cluster's CPUs).

    .venv/bin/python bench/synthesize.py --scale 20 --pick every
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray import results  # noqa: E402
from fer_ray.config import SynthesizeConfig  # noqa: E402
from fer_ray.pipelines.synthesize import FACE_COLUMNS, OUTPUT_FOLDERS  # noqa: E402
from fer_ray.pipelines.writer import table_of  # noqa: E402
from fer_ray.stages.fusion import FuseSubjectsStage  # noqa: E402


def prepare_faces(tmp: str, scale: int) -> str:
    from fer_ray.sample_data import write_sample_data

    write_sample_data(os.path.join(tmp, "raw"), scale=scale, layouts=("jaffe",))
    faces = os.path.join(tmp, "faces")
    subprocess.run([sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "jaffe", "--input",
                    os.path.join(tmp, "raw", "jaffe"), "--output", faces], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return faces


def run_ours(faces: str, out: str, args) -> tuple[float, int]:
    """(mixed faces/s from the job's summary, mixed faces written)."""
    cmd = [sys.executable, "-m", "fer_ray.cli", "synthesize", "--input", faces, "--output", out,
           "--method", args.method, "--pick", args.pick, "--contact-sheets", "0"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = results.read_commit(out).summary()
    return summary["mixed_per_s"], summary["mixed"]


def run_serial(faces: str, out: str, args) -> tuple[float, int]:
    start = time.perf_counter()
    table = results.read_table(faces, "faces", columns=FACE_COLUMNS)
    batch = {name: np.asarray(table[name].to_pylist(), dtype=object if name in ("face",) else None)
             for name in table.column_names}
    rows = FuseSubjectsStage(SynthesizeConfig(input=faces, output=out, method=args.method, pick=args.pick))(batch)
    mixed = table_of(rows, rows["is_mixed"].to_numpy(), OUTPUT_FOLDERS["mixed"])
    os.makedirs(out, exist_ok=True)
    pq.write_table(mixed, os.path.join(out, "mixed.parquet"), compression="zstd")
    return mixed.num_rows / (time.perf_counter() - start), mixed.num_rows


def ray_cpus() -> int:
    import ray

    ray.init(log_to_driver=False)
    try:
        return int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=20, help="10 subjects per step (default 200 subjects)")
    parser.add_argument("--method", default="region", choices=("region", "weighted", "pca"))
    parser.add_argument("--pick", default="every", choices=("first", "every"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.method == "weighted":
        raise SystemExit("the bench runs region or pca (weighted needs --alpha; its cost equals pca's)")
    with tempfile.TemporaryDirectory() as tmp:
        faces = prepare_faces(tmp, args.scale)
        ours, serial = [], []
        for i in range(args.repeats):
            rate, n_ours = run_ours(faces, os.path.join(tmp, f"ours{i}"), args)
            ours.append(rate)
            rate, n_serial = run_serial(faces, os.path.join(tmp, f"serial{i}"), args)
            serial.append(rate)
            if n_ours != n_serial:
                raise SystemExit(f"ours wrote {n_ours} mixed faces, the serial loop {n_serial}")
            print(f"round {i + 1}: ours {ours[-1]:.1f} faces/s, serial {serial[-1]:.1f} faces/s "
                  f"({n_ours} mixed faces)", flush=True)
    cpus = ray_cpus()
    ours_rate, serial_rate = float(np.median(ours)), float(np.median(serial))
    print(f"scale={args.scale} method={args.method} pick={args.pick} mixed faces={n_ours} "
          f"ray cpus={cpus} repeats={args.repeats} (medians)")
    print(f"per core: ours {ours_rate / cpus:.1f} faces/s/core, serial {serial_rate:.1f} faces/s/core")
    print(f"bench synthesize: ours={ours_rate:.1f} faces/s, baseline={serial_rate:.1f} faces/s, "
          f"ratio={ours_rate / serial_rate:.2f} (target >= 1)")


if __name__ == "__main__":
    main()
