"""How preprocessing throughput scales on this machine: 1 vs 2 CPUs on one Ray node, and one
node of 2 CPUs vs three nodes with the same 2 CPUs (a head that takes no work and two worker
nodes of 1 CPU, as the multi-node tests run them), all in one run.

Each setting is a real Ray cluster started for it (`ray start`, token auth on, as
tests/cluster.py starts them), and the job is `fer-ray preprocess --layout folder` over the
sample photos (`--scale` times the sample's 28 drawn photos, 320x240, each detected, its
landmarks found, aligned and cropped: work that scales with CPUs, unlike FER2013's ready
crops, whose one CSV stream bounds the job) joining it through RAY_ADDRESS; the rate is the
job's own (its summary's images/s, from the run's start to its commit, cluster start-up
excluded). The settings alternate for --repeats rounds and the medians are compared:

    .venv/bin/python bench/scaling.py --scale 40 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.cluster import HeadNode, LocalCluster, enable_token_auth  # noqa: E402

SETTINGS = {
    "1 node, 1 CPU": lambda: HeadNode(num_cpus=1),
    "1 node, 2 CPUs": lambda: HeadNode(num_cpus=2),
    "3 nodes, 2 CPUs": lambda: LocalCluster(workers=2, cpus=1),
}


def images_per_s(cluster, photos: str, out: str) -> float:
    """The job's own rate on this cluster, a face actor per CPU."""
    from fer_ray import results

    head = getattr(cluster, "head", cluster)
    workers = cluster.size * cluster.cpus if isinstance(cluster, LocalCluster) else cluster.num_cpus
    command = [sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "folder", "--input", photos,
               "--output", out, "--workers", str(workers)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": head.address},
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the job failed on {head.address}:\n{done.stderr[-3000:]}")
    return results.read_commit(out).summary()["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=40, help="times the sample's 28 drawn photos")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    enable_token_auth()  # before anything imports ray
    from fer_ray.sample_data import write_sample_data

    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_sample_data(os.path.join(tmp, "raw"), scale=args.scale, layouts=("folder",))["folder"]["uri"]
        for round_ in range(args.repeats):
            for name, make in SETTINGS.items():
                cluster = make().start()
                try:
                    out = os.path.join(tmp, f"out-{round_}-{list(SETTINGS).index(name)}")
                    rates[name].append(images_per_s(cluster, photos, out))
                finally:
                    cluster.stop()
                print(f"round {round_ + 1}: {name}: {rates[name][-1]:.1f} images/s", flush=True)
    median = {name: float(np.median(values)) for name, values in rates.items()}
    one, two, three = median["1 node, 1 CPU"], median["1 node, 2 CPUs"], median["3 nodes, 2 CPUs"]
    print(f"scale={args.scale} repeats={args.repeats} cores={os.cpu_count()} (medians)")
    for name, value in median.items():
        print(f"  {name:16s} {value:8.1f} images/s")
    # targets: 80% of linear for twice the CPUs, and at most a tenth lost to spreading them
    print("scaling_cpus: ours 2 CPUs, baseline 1 CPU, one node; scaling_nodes: ours 3 nodes, baseline 1 node, "
          "2 CPUs each")
    print(f"bench scaling_cpus: ours={two:.1f} images/s, baseline={one:.1f} images/s, ratio={two / one:.2f} "
          "(target >= 1.6)")
    print(f"bench scaling_nodes: ours={three:.1f} images/s, baseline={two:.1f} images/s, ratio={three / two:.2f} "
          "(target >= 0.9)")


if __name__ == "__main__":
    main()
