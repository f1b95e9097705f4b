"""Big photos: faces searched at a reduced size vs at full size, on 12-megapixel JPEGs.

Generates --photos 4000x3000 JPEG photos (quality 90), each with two drawn faces of
--face-side pixels (a portrait's share of a camera frame), and runs the per-image function
of the `folder` layout (decode_image, then FaceExtractor: Haar, dlib landmarks, aligned crop)
on each, alternating for --repeats rounds:
  ours      face.detect_side at its default (the search on the photo shrunk to 1024 px; the
            landmarks and the crop from the full image);
  baseline  face.detect_side 0 (the search on the full 12 MP image, as before).
Prints images/s of both, the time split (decode / faces: search, landmarks, crop), and how
closely ours agrees with the full search: box IoU and landmark distance on the crop.

    .venv/bin/python bench/big_photos.py --photos 6
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray.config import FaceConfig  # noqa: E402
from fer_ray.vision.decode import decode_image  # noqa: E402
from fer_ray.vision.faces import FaceExtractor  # noqa: E402
from fer_ray.vision.synthetic_face import draw_photo  # noqa: E402
from fer_ray.vision.tracking import iou  # noqa: E402


def make_photos(count: int, face_side: int) -> list[bytes]:
    photos = []
    for seed in range(count):
        image, _ = draw_photo(4000, 3000, face_side, seed=seed)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def run(extractor: FaceExtractor, photos: list[bytes]) -> tuple[float, list, dict]:
    """(images/s, faces per photo, seconds spent decoding / finding the faces)."""
    spent = {"decode": 0.0, "faces": 0.0}
    found = []
    for data in photos:
        t0 = time.perf_counter()
        image = decode_image(data, "rgb")
        t1 = time.perf_counter()
        found.append(extractor.extract(image))
        spent["decode"] += t1 - t0
        spent["faces"] += time.perf_counter() - t1
    return len(photos) / sum(spent.values()), found, spent


def agreement(ours: list, full: list) -> tuple[list[float], list[float], int]:
    """Box IoU and mean landmark distance (crop pixels) of each of our faces with the full
    search's face it overlaps most; and the faces found by one and not the other."""
    ious, distances, missing = [], [], 0
    for faces, references in zip(ours, full):
        missing += abs(len(faces) - len(references))
        for face in faces:
            if not references:
                continue
            ref = max(references, key=lambda r: iou(face.bbox, r.bbox))
            ious.append(float(iou(face.bbox, ref.bbox)))
            distances.append(float(np.linalg.norm(face.landmarks - ref.landmarks, axis=1).mean()))
    return ious, distances, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--face-side", type=int, default=800, help="pixels of each drawn face's square")
    parser.add_argument("--size", type=int, default=224, help="crop side (224 px RGB, as AffectNet's models take)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    photos = make_photos(args.photos, args.face_side)
    ours_cfg = FaceConfig(color="rgb", size=args.size)
    ours_x = FaceExtractor(ours_cfg, "haar")
    full_x = FaceExtractor(FaceConfig(color="rgb", size=args.size, detect_side=0), "haar")
    rates = {"ours": [], "full": []}
    for round_ in range(args.repeats):
        ours_rate, ours_faces, ours_spent = run(ours_x, photos)
        full_rate, full_faces, full_spent = run(full_x, photos)
        rates["ours"].append(ours_rate)
        rates["full"].append(full_rate)
        print(f"round {round_ + 1}: ours {ours_rate:.2f} images/s, full search {full_rate:.2f} images/s", flush=True)
    ious, distances, missing = agreement(ours_faces, full_faces)
    for name, spent in (("ours", ours_spent), ("full search", full_spent)):
        total = sum(spent.values())
        print(f"{name}: " + ", ".join(f"{k} {v / total:.0%}" for k, v in spent.items())
              + f" ({total / len(photos):.2f} s per photo)")
    print(f"{args.photos} photos of 4000x3000, {sum(map(len, full_faces))} faces by the full search; "
          f"ours found {sum(map(len, ours_faces))} ({missing} differ); box IoU min {min(ious):.3f}; "
          f"landmarks on the {args.size} px crop: mean {np.mean(distances):.2f} px, worst face {max(distances):.2f} px "
          f"(detect_side {ours_cfg.detect_side})")
    ours, full = float(np.median(rates["ours"])), float(np.median(rates["full"]))
    print(f"bench big_photos: ours={ours:.2f} images/s, baseline={full:.2f} images/s, ratio={ours / full:.2f} "
          f"(target >= 3)")


if __name__ == "__main__":
    main()
