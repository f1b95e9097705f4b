"""Listing a million inputs: time and the driver's peak memory, ours vs the code before it.

Two inputs, made on the fly and deleted afterwards:
  local  a folder-layout tree of --local-files empty files (8 class folders; inodes only);
  s3     --s3-objects empty objects in 8 class prefixes (and a few nested ones) on the S3 test
         server (moto, as in tests/cluster.py), served from this process over HTTP. The objects
         are put through moto's backend directly: a PUT each over HTTP would take minutes here,
         and only the listing is measured.
For each input, the driver's whole listing (`datasets.list_inputs` of the folder layout: list
the tree, make one input row per name, assign splits) runs in a fresh interpreter, once with
this checkout's code (ours) and once with the code of --baseline-rev (unpacked from git: one
sequential recursive S3 listing, a Python object per name and a dict per row). Each child
reports its wall time and peak RSS (VmHWM) over its RSS before listing; fresh processes,
so one run's peak cannot hide another's. Variants alternate for --repeats rounds.

    .venv/bin/python bench/listing.py --local-files 1000000 --s3-objects 50000    # about 10 minutes here
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.cluster import S3Server  # noqa: E402

BASELINE_REV = "5c9989341e3f374f7d3f51c5d05d87d3524785cb"  # before the parallel listing and input tables
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")
BUCKET = "bench-listing"

# The driver's listing, timed in a fresh interpreter (run with one checkout's fer_ray first on the path).
CHILD = r"""
import json, sys, time
import psutil
from fer_ray import datasets
from fer_ray.config import PreprocessConfig

cfg = PreprocessConfig(layout="folder", input=sys.argv[1], output="/tmp/fer-ray-bench-listing-out")
before = psutil.Process().memory_info().rss
start = time.perf_counter()
inputs = datasets.list_inputs(cfg)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (pytest's own)
peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024
import fer_ray
print(json.dumps({"inputs": inputs.count, "seconds": seconds, "peak_mb": (peak - before) / 2**20,
                  "fingerprint": inputs.fingerprint, "code": fer_ray.__file__}))
"""


def make_local_tree(root: str, files: int) -> None:
    for i in range(files):
        folder = os.path.join(root, CLASSES[i % len(CLASSES)])
        if i < len(CLASSES):
            os.makedirs(folder)
        os.close(os.open(os.path.join(folder, f"{i:07d}.jpg"), os.O_CREAT | os.O_WRONLY, 0o644))


def fill_bucket(objects: int) -> str:
    """Empty objects: 8 class prefixes, one in 10 a level deeper (a take of a subject)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(objects):
        deeper = f"take_{i % 7}/" if i % 10 == 0 else ""
        backend.put_object(BUCKET, f"raw/{CLASSES[i % len(CLASSES)]}/{deeper}{i:07d}.jpg", b"")
    return f"s3://{BUCKET}/raw"


def unpack_baseline(rev: str, into: str) -> str:
    os.makedirs(into)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "fer_ray"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def measure(code_root: str, uri: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, uri], cwd=code_root, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": code_root})
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"].startswith(code_root), result["code"]  # the intended checkout ran
    return result


def compare(name: str, uri: str, roots: dict, repeats: int, env: dict) -> dict:
    runs = {variant: [] for variant in roots}
    for round_ in range(1, repeats + 1):
        for variant, code_root in roots.items():
            runs[variant].append(measure(code_root, uri, env))
            r = runs[variant][-1]
            print(f"{name} round {round_}: {variant:8s} {r['inputs']} inputs in {r['seconds']:.2f} s, "
                  f"peak driver RSS +{r['peak_mb']:.0f} MiB", flush=True)
    ours, base = runs["ours"], runs["baseline"]
    assert {r["inputs"] for r in ours} == {r["inputs"] for r in base}  # the same inputs, each once
    assert {r["fingerprint"] for r in ours} == {r["fingerprint"] for r in base}
    return {variant: (statistics.median(r["seconds"] for r in rs), statistics.median(r["peak_mb"] for r in rs),
                      rs[0]["inputs"]) for variant, rs in runs.items()}


def report(name: str, medians: dict) -> None:
    (t_ours, m_ours, n), (t_base, m_base, _) = medians["ours"], medians["baseline"]
    print(f"{name}: {n} inputs; ours {t_ours:.2f} s, +{m_ours:.0f} MiB ({m_ours * 2**20 / n:.0f} B/input); "
          f"baseline {t_base:.2f} s, +{m_base:.0f} MiB ({m_base * 2**20 / n:.0f} B/input); "
          f"time x{t_base / t_ours:.2f}, memory x{m_base / m_ours:.2f} less")
    print(f"bench listing {name} time: ours={n / t_ours:.0f} inputs/s, baseline={n / t_base:.0f} inputs/s, "
          f"ratio={t_base / t_ours:.2f} (target >= 1)")
    print(f"bench listing {name} memory: ours={n / m_ours:.0f} inputs/MiB, baseline={n / m_base:.0f} inputs/MiB, "
          f"ratio={m_base / m_ours:.2f} (target >= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-files", type=int, default=1_000_000)
    parser.add_argument("--s3-objects", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()
    print(f"df /tmp: {shutil.disk_usage(tempfile.gettempdir()).free / 2**30:.0f} GiB free; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fer-ray-bench-listing-") as tmp:
        roots = {"ours": ROOT, "baseline": unpack_baseline(args.baseline_rev, os.path.join(tmp, "baseline"))}
        results = {}
        if args.s3_objects:
            server = S3Server().start()
            try:
                server.create_bucket(BUCKET)
                started = time.perf_counter()
                uri = fill_bucket(args.s3_objects)
                print(f"s3: {args.s3_objects} objects put in {time.perf_counter() - started:.0f} s", flush=True)
                results["s3"] = compare("s3", uri, roots, args.repeats, {**os.environ, **server.env()})
            finally:
                server.stop()
        if args.local_files:
            local = os.path.join(tmp, "tree")
            started = time.perf_counter()
            make_local_tree(local, args.local_files)
            print(f"local: {args.local_files} empty files made in {time.perf_counter() - started:.0f} s", flush=True)
            results["local"] = compare("local", local, roots, args.repeats, dict(os.environ))
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        for name, medians in results.items():
            report(name, medians)


if __name__ == "__main__":
    main()
