"""FAN landmark throughput: our batched FanLandmarker vs face-alignment's own API.

Same faces, boxes, weights, device and flip setting on both sides:
  ours      FanLandmarker.predict_many over batches of --batch faces (window cut on the
            CPU; resize, normalise, one forward pass and heatmap decoding on the device);
  baseline  face_alignment.FaceAlignment(...).get_landmarks_from_image(image,
            detected_faces=[box]) image after image (its own API: batch size 1, crops by
            OpenCV, decoding in Python; compile=False, as torch.compile needs a compiler
            toolchain here).
Both are warmed up first; rounds alternate. Also printed: the share of our time spent
outside the network forward (window preparation and decoding), and that both give the
same points (max difference in pixels).

Weights: --weights (a 2DFAN4 file, path or URI) or face-alignment's cache; with neither,
a seeded random FAN is built and saved to a temporary file (speed does not depend on the
values). No Ray needed: runs on a GPU machine with torch and face-alignment alone.

    .venv/bin/python bench/landmarks.py --faces 24 --batch 8                # CPU
    python bench/landmarks.py --device cuda --faces 2048 --batch 256 --precision bf16
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray.vision.fan import DTYPES, FanLandmarker  # noqa: E402
from fer_ray.weights import NETWORK_WEIGHTS, face_alignment_cache, network_weights_problem  # noqa: E402


def bench_faces(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n real faces (scikit-image's LFW subset, 25 px) scaled up to 160 px photos with a
    little border, each with its face box; every eighth is the astronaut photo."""
    from skimage import data

    lfw, astronaut = data.lfw_subset(), data.astronaut()
    faces = []
    for i in range(n):
        if i % 8 == 7:
            faces.append((astronaut, np.array([[160.0, 20.0, 300.0, 190.0]])))
            continue
        face = cv2.resize((lfw[i % len(lfw)] * 255).astype(np.uint8), (128, 128), interpolation=cv2.INTER_CUBIC)
        photo = cv2.copyMakeBorder(cv2.cvtColor(face, cv2.COLOR_GRAY2RGB), 16, 16, 16, 16, cv2.BORDER_REFLECT)
        faces.append((photo, np.array([[16.0, 16.0, 144.0, 144.0]])))
    return faces


def weights_file(args, tmp: str) -> tuple[str, bool]:
    """A local 2DFAN4 file (--weights, face-alignment's cache, or a random FAN saved to tmp)
    and whether it is the random one."""
    from fer_ray.weights import local_weights

    if args.weights:
        return local_weights(args.weights, "--weights"), False
    if network_weights_problem("fan") is None:
        return face_alignment_cache(NETWORK_WEIGHTS["fan"][0]), False
    from face_alignment.models import FAN

    print("no FAN weights configured or cached: timing a seeded random FAN (same cost)")
    torch.manual_seed(0)
    path = os.path.join(tmp, "random-fan.pth")
    torch.save(FAN(4).state_dict(), path)
    return path, True


def reference_api(path: str, args):
    """face-alignment's FaceAlignment reading `path` through its own cache lookup."""
    import face_alignment

    hub = tempfile.mkdtemp(prefix="fa-hub-")
    os.makedirs(os.path.join(hub, "checkpoints"))
    os.symlink(os.path.abspath(path), os.path.join(hub, "checkpoints", NETWORK_WEIGHTS["fan"][0]))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(hub)
    try:
        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=args.device,
                                            dtype=DTYPES[args.precision], flip_input=args.flip,
                                            face_detector="folder", compile=False)
    finally:
        torch.hub.set_dir(previous)


def run_reference(api, faces) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    points = [np.stack(api.get_landmarks_from_image(image, detected_faces=list(boxes))) for image, boxes in faces]
    return time.perf_counter() - start, points


def run_ours(landmarker: FanLandmarker, faces, batch: int) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    points = []
    for i in range(0, len(faces), batch):
        chunk = faces[i:i + batch]
        points += landmarker.predict_many([image for image, _ in chunk], [boxes for _, boxes in chunk])
    return time.perf_counter() - start, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=24, help="faces per round")
    parser.add_argument("--batch", type=int, default=8, help="faces per forward pass (ours)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds (medians are reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=sorted(DTYPES), help="both sides")
    parser.add_argument("--flip", action="store_true", help="flip_input on both sides")
    parser.add_argument("--weights", default="", help="2DFAN4 weights, path or URI")
    args = parser.parse_args()

    faces = bench_faces(args.faces)
    with tempfile.TemporaryDirectory() as tmp:
        path, random_weights = weights_file(args, tmp)
        ours = FanLandmarker("fan", path, args.device, args.precision, args.flip)
        api = reference_api(path, args)
    run_reference(api, faces[:2])  # warm-up: numba compiles its decoder, kernels are chosen
    run_ours(ours, faces[:args.batch], args.batch)
    ours.seconds.clear()
    ours_s, theirs_s, difference = [], [], 0.0
    for round_ in range(args.repeats):
        ours_time, ours_points = run_ours(ours, faces, args.batch)
        theirs_time, their_points = run_reference(api, faces)
        difference = max(difference, max(float(np.abs(a - b).max()) for a, b in zip(ours_points, their_points)))
        ours_s.append(ours_time)
        theirs_s.append(theirs_time)
        print(f"round {round_ + 1}: ours {len(faces) / ours_time:.2f} faces/s, "
              f"face-alignment {len(faces) / theirs_time:.2f} faces/s")
    total = sum(ours.seconds.values())
    outside = 1 - ours.seconds["forward"] / total
    print("our time by phase: " + ", ".join(f"{k} {v / total:.1%}" for k, v in ours.seconds.items())
          + f"; outside the forward pass: {outside:.1%} (target < 10%)")
    print(f"largest point difference, ours vs face-alignment: {difference:.2f} px"
          + (" (random weights: near-tied heatmap peaks can fall either way; tests/unit/test_fan.py"
             " checks equality on a network shaped to have distinct peaks)" if random_weights else ""))
    ours_rate, theirs_rate = len(faces) / np.median(ours_s), len(faces) / np.median(theirs_s)
    target = 10 if args.device.startswith("cuda") else 1
    print(f"bench landmarks: ours={ours_rate:.2f} faces/s, baseline={theirs_rate:.2f} faces/s, "
          f"ratio={ours_rate / theirs_rate:.2f} (target >= {target})")


if __name__ == "__main__":
    main()
