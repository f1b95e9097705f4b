"""Input several times larger than Ray's object store: the preprocessing job still finishes,
every input is accounted for, and the driver's memory stays flat.

A local Ray instance is started with a small object store (default 150 MiB), and the job reads
a `folder` layout of large, noisy photos (JPEG, default 280 of about 2.2 MiB: about 4x the
store). Since the face actors read local files themselves, the encoded photos no longer travel
through the object store (from S3 they do, from the fetch tasks to the face actors): what
passes through it here is the listing and the faces. The same job then runs again with a store
that holds the input twice over (the baseline: nothing has to spill), and the script prints,
for both, the input/store ratio, what Ray spilled to disk and restored (from its memory
summary), the driver's RSS before, at peak and after, and the throughput; the last line
compares the two throughputs.
Ray Data's streaming executor keeps what is in flight under the store's size (backpressure),
so "spilled 0" is a possible, good outcome: it means the store never had to overflow.

    .venv/bin/python bench/spilling.py --photos 280 --object-store-mb 150
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray import labels  # noqa: E402
from fer_ray.sample_data import FOLDER_NAMES  # noqa: E402
from fer_ray.vision.synthetic_face import draw_face, identity_for  # noqa: E402

MIB = 1 << 20


def write_photos(root: str, count: int, side: int) -> int:
    """`count` large colour photos of one face each, in class folders; their total bytes.
    Strong sensor-like noise keeps JPEG from compressing them to a few hundred KB."""
    def photo(i: int) -> int:
        expression = labels.CANONICAL[i % len(labels.CANONICAL)]
        rng = np.random.default_rng(i)
        img, _ = draw_face(expression, identity_for(f"big-{i}", 0), side * 3 // 4, color=True, rng=rng,
                           width=side, face_scale=0.6, noise=0.06)
        path = os.path.join(root, FOLDER_NAMES[expression], f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 97])
        assert ok
        with open(path, "wb") as f:
            f.write(data.tobytes())
        return len(data)

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return sum(pool.map(photo, range(count)))


class PeakRss:
    """The process's RSS sampled every 0.2 s in a thread: the highest value seen."""

    def __init__(self):
        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.2)

    def __enter__(self) -> "PeakRss":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.running = False
        self.thread.join()


def spilled_and_restored_mib() -> tuple[int, int]:
    """Ray's own totals for this instance (`ray memory --stats-only` reads the same)."""
    from ray._private.internal_api import memory_summary

    summary = memory_summary(stats_only=True)
    spilled = re.search(r"Spilled (\d+) MiB", summary)
    restored = re.search(r"Restored (\d+) MiB", summary)
    return int(spilled.group(1)) if spilled else 0, int(restored.group(1)) if restored else 0


def run_once(photos: str, out: str, store_mib: int, cpus: int, ray_dir: str) -> dict:
    """The preprocessing job on a fresh local instance with this object store: its figures."""
    import ray

    from fer_ray.config import PreprocessConfig
    from fer_ray.pipelines import preprocess

    ray.init(num_cpus=cpus, object_store_memory=store_mib * MIB, _temp_dir=ray_dir, include_dashboard=False,
             log_to_driver=False)
    try:
        before = psutil.Process().memory_info().rss
        with PeakRss() as rss:
            started = time.perf_counter()
            summary = preprocess.run(PreprocessConfig(layout="folder", input=photos, output=out, workers=cpus))
            seconds = time.perf_counter() - started
        after = psutil.Process().memory_info().rss
        spilled, restored = spilled_and_restored_mib()
    finally:
        ray.shutdown()
    return {"summary": summary, "seconds": seconds, "spilled": spilled, "restored": restored,
            "rss": (before, rss.peak, after)}


def report(name: str, store_mib: int, photos: int, input_bytes: int, run: dict) -> None:
    before, peak, after = run["rss"]
    print(f"{name}: object store {store_mib} MiB (input/store {input_bytes / MIB / store_mib:.1f}x): "
          f"{run['seconds']:.0f} s, {photos / run['seconds']:.2f} photos/s; statuses {run['summary']['status']}; "
          f"every input accounted for: {run['summary']['inputs'] == photos}")
    print(f"  spilled {run['spilled']} MiB, restored {run['restored']} MiB (Ray's memory summary); driver RSS "
          f"{before / MIB:.0f} MiB before, {peak / MIB:.0f} at peak, {after / MIB:.0f} after "
          f"(peak - before: {(peak - before) / MIB:.0f} MiB, {(peak - before) / input_bytes:.2f}x the input)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=280)
    parser.add_argument("--side", type=int, default=2000, help="photo width in pixels (height is 3/4 of it)")
    parser.add_argument("--object-store-mb", type=int, default=150)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        photos = os.path.join(tmp, "photos")
        started = time.perf_counter()
        input_bytes = write_photos(photos, args.photos, args.side)
        print(f"input: {args.photos} photos, {input_bytes / MIB:.0f} MiB "
              f"({time.perf_counter() - started:.0f} s to draw)")
        # the baseline: a store that holds the whole input twice over, so nothing needs to spill
        stores = {"small store": args.object_store_mb, "ample store": max(2 * input_bytes // MIB, 512)}
        runs = {name: run_once(photos, os.path.join(tmp, f"out-{i}"), mib, args.cpus, os.path.join(tmp, f"ray-{i}"))
                for i, (name, mib) in enumerate(stores.items())}
    for name, run in runs.items():
        report(name, stores[name], args.photos, input_bytes, run)
    ours, baseline = (args.photos / runs[name]["seconds"] for name in stores)
    print(f"bench spilling: ours={ours:.2f} photos/s, baseline={baseline:.2f} photos/s, "
          f"ratio={ours / baseline:.2f} (target >= 0.8)")
    lost = {name: run["summary"]["inputs"] for name, run in runs.items() if run["summary"]["inputs"] != args.photos}
    if lost:
        sys.exit(f"manifest rows for {args.photos} photos: {lost}")


if __name__ == "__main__":
    main()
