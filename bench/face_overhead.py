"""Per-face Python overhead of the face stage: where a face's CPU goes, and dlib's points.

Runs the face stage (no Ray) over --rows FER2013 sample rows under cProfile and prints every
function of fer_ray or numpy whose own time is above --share of the total, next to the dlib
predictor (C++, the work itself). Then times the dlib point conversion on the same faces:
  ours      landmarks.points_array (dlib's printed points parsed in one call)
  baseline  reading the 68 point objects one by one (`[(p.x, p.y) for p in shape.parts()]`)

    .venv/bin/python bench/face_overhead.py --rows 2000
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import timeit

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from preprocess import make_csv, numpy_batches  # noqa: E402

from fer_ray.config import PreprocessConfig  # noqa: E402
from fer_ray.stages.face import FaceStage  # noqa: E402
from fer_ray.vision.landmarks import points_array  # noqa: E402


def profile_stage(csv_path: str) -> tuple[pstats.Stats, int]:
    stage = FaceStage(PreprocessConfig(layout="fer2013", input=csv_path, output=csv_path + ".out"))
    batches = list(numpy_batches(csv_path, 32))
    profiler = cProfile.Profile()
    profiler.enable()
    faces = sum(stage(batch).num_rows for batch in batches)
    profiler.disable()
    return pstats.Stats(profiler), faces


def shares(stats: pstats.Stats, floor: float) -> list[tuple[float, str]]:
    """(share of the total, function) for each function whose own time is above `floor`."""
    total = stats.total_tt
    rows = [(tt / total, f"{os.path.basename(file)}:{line}({name})")
            for (file, line, name), (_, _, tt, _, _) in stats.stats.items()]
    return sorted((row for row in rows if row[0] >= floor), reverse=True)


def sample_shapes(csv_path: str, count: int) -> list:
    """dlib shapes of real faces: the landmarker's own predictions on the sample rows."""
    import dlib

    stage = FaceStage(PreprocessConfig(layout="fer2013", input=csv_path, output=csv_path + ".out"))
    landmarker = stage.extractor.landmarker
    batch = next(numpy_batches(csv_path, count))
    shapes = []
    for row in stage.decode_rows([dict(zip(batch, values)) for values in zip(*batch.values())]).values():
        height, width = row.shape[:2]
        shapes.append(landmarker.predictor(np.ascontiguousarray(row), dlib.rectangle(0, 0, width - 1, height - 1)))
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.01, help="smallest share of the total to print")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "fer2013.csv")
        make_csv(csv_path, args.rows)
        stats, faces = profile_stage(csv_path)
        shapes = sample_shapes(csv_path, 64)
    print(f"{faces} faces, {stats.total_tt / faces * 1e3:.2f} ms of profiled CPU per face; own time above "
          f"{args.share:.0%} of the total (a pybind call such as dlib's predictor counts as its caller's own time):")
    for share, name in shares(stats, args.share):
        print(f"  {share:6.1%}  {name}")
    reps = 200
    ours = timeit.timeit(lambda: [points_array(s) for s in shapes], number=reps) / (reps * len(shapes))
    base = timeit.timeit(lambda: [np.array([(p.x, p.y) for p in s.parts()], np.float64) for s in shapes],
                         number=reps) / (reps * len(shapes))
    assert all(np.array_equal(points_array(s), np.array([(p.x, p.y) for p in s.parts()])) for s in shapes)
    print(f"dlib points to numpy: ours {ours * 1e6:.1f} us/face, point by point {base * 1e6:.1f} us/face")
    print(f"bench face_overhead: ours={1 / ours:.0f} faces/s, baseline={1 / base:.0f} faces/s, "
          f"ratio={base / ours:.2f} (target >= 2)")


if __name__ == "__main__":
    main()
