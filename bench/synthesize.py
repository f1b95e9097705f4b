"""Synthesis throughput: our Ray Data job vs a serial single-process loop over the same faces.

Input: the JAFFE-style sample at --scale (10 subjects per scale step, 7 expressions, 2-3
takes each), preprocessed once (not timed). Ours runs as users run it on a cluster: a Ray
head started once for the bench (`ray start --head`, 2 CPUs, token auth), the job joining
it through RAY_ADDRESS. Then, alternating for --repeats rounds:
  ours      `fer-ray synthesize` (planning the units, fusion and Parquet writing included;
            the job's own summary);
  baseline  one process: pyarrow reads faces/, the same fusion code runs subject after
            subject, pyarrow writes one mixed/ file. Same method and pick rule.
The first job on the fresh cluster also starts Ray Data's own actors (stats, autoscaling
requests) and the worker processes: it is printed as `cold` and left out of the medians.
Last, the job's driver peak memory on the input and on the input doubled (every subject
copied under a new name): planning runs in a task, so the driver must not grow.

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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray import results  # noqa: E402
from fer_ray.config import SynthesizeConfig  # noqa: E402
from fer_ray.pipelines.synthesize import FACE_COLUMNS, OUTPUT_FOLDERS  # noqa: E402
from fer_ray.pipelines.writer import table_of  # noqa: E402
from fer_ray.stages.fusion import FuseSubjectsStage  # noqa: E402
from tests.cluster import HeadNode, enable_token_auth  # noqa: E402


def prepare_faces(tmp: str, scale: int) -> str:
    from fer_ray.sample_data import write_sample_data

    write_sample_data(os.path.join(tmp, "raw"), scale=scale, layouts=("jaffe",))
    faces = os.path.join(tmp, "faces")
    subprocess.run([sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "jaffe", "--input",
                    os.path.join(tmp, "raw", "jaffe"), "--output", faces], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return faces


def run_ours(faces: str, out: str, args, address: str) -> tuple[float, int, float]:
    """(mixed faces/s from the job's summary, mixed faces written, the driver's peak RSS in MiB)."""
    cmd = [sys.executable, "-m", "fer_ray.cli", "synthesize", "--input", faces, "--output", out,
           "--method", args.method, "--pick", args.pick, "--contact-sheets", "0"]
    driver = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": address},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(driver.pid, 0)
    if status != 0:
        raise SystemExit(f"the job failed (wait status {status}): {' '.join(cmd)}")
    summary = results.read_commit(out).summary()
    return summary["mixed_per_s"], summary["mixed"], usage.ru_maxrss / 1024


def doubled(faces: str, out: str) -> str:
    """The committed faces twice over: the copy's subjects and ids renamed, so it fuses twice
    the faces into twice the mixed faces."""
    table = results.read_table(faces, "faces")
    copy = table.set_column(table.schema.get_field_index("subject"), "subject",
                            pc.binary_join_element_wise(table["subject"], pa.scalar("-copy"), ""))
    copy = copy.set_column(copy.schema.get_field_index("sample_id"), "sample_id",
                           pc.binary_join_element_wise(copy["sample_id"], pa.scalar("-copy"), ""))
    results.commit_tables(out, "preprocess", {"faces": [table, copy]})
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=20, help="10 subjects per step (default 200 subjects)")
    parser.add_argument("--method", default="region", choices=("region", "weighted", "pca"))
    parser.add_argument("--pick", default="every", choices=("first", "every"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="the Ray head's CPUs")
    args = parser.parse_args()
    if args.method == "weighted":
        raise SystemExit("the bench runs region or pca (weighted needs --alpha; its cost equals pca's)")
    enable_token_auth()
    with tempfile.TemporaryDirectory() as tmp:
        faces = prepare_faces(tmp, args.scale)
        head = HeadNode(num_cpus=args.cpus).start()
        try:
            cold, n_ours, _ = run_ours(faces, os.path.join(tmp, "cold"), args, head.address)
            print(f"cold (the cluster's first job): ours {cold:.1f} faces/s", flush=True)
            ours, serial, driver_mib = [], [], []
            for i in range(args.repeats):
                rate, n_ours, peak = run_ours(faces, os.path.join(tmp, f"ours{i}"), args, head.address)
                ours.append(rate)
                driver_mib.append(peak)
                rate, n_serial = run_serial(faces, os.path.join(tmp, f"serial{i}"), args)
                serial.append(rate)
                if n_ours != n_serial:
                    raise SystemExit(f"ours wrote {n_ours} mixed faces, the serial loop {n_serial}")
                print(f"round {i + 1}: ours {ours[-1]:.1f} faces/s, serial {serial[-1]:.1f} faces/s "
                      f"({n_ours} mixed faces)", flush=True)
            _, n_twice, twice_mib = run_ours(doubled(faces, os.path.join(tmp, "faces2")), os.path.join(tmp, "ours2"),
                                             args, head.address)
        finally:
            head.stop()
    ours_rate, serial_rate = float(np.median(ours)), float(np.median(serial))
    print(f"scale={args.scale} method={args.method} pick={args.pick} mixed faces={n_ours} "
          f"ray cpus={args.cpus} repeats={args.repeats} (medians)")
    print(f"driver peak RSS: {float(np.median(driver_mib)):.0f} MiB on the input, {twice_mib:.0f} MiB on it doubled "
          f"({n_twice} mixed faces)")
    print(f"per core: ours {ours_rate / args.cpus:.1f} faces/s/core, serial {serial_rate:.1f} faces/s/core, "
          f"ratio={ours_rate / args.cpus / serial_rate:.2f} (target >= 0.8)")
    print(f"bench synthesize: ours={ours_rate:.1f} faces/s, baseline={serial_rate:.1f} faces/s, "
          f"ratio={ours_rate / serial_rate:.2f} (target >= 1.5)")


if __name__ == "__main__":
    main()
