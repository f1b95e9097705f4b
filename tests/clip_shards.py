"""A committed clips/ output (schema.CLIPS) made of synthetic faces, for the clip training,
evaluate and predict tests while the video ingest is built beside them.

Each clip shows one subject's face (fer_ray.vision.synthetic_face) unfolding from neutral to
its expression's peak over the T frames, with per-frame pose and lighting jitter; a few
frames are marked not valid (valid False, a blank crop, NaN landmarks), as the ingest marks
a frame where the tracked face was lost. Subjects are split train/val/test, disjoint, so
the tests score held-out people. Published with results.commit_tables, the same marker a
preprocess run writes, so every reader takes it as a committed result.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from fer_ray import results
from fer_ray.face68 import N_VALUES
from fer_ray.labels import CANONICAL
from fer_ray.schema import CLIPS
from fer_ray.vision.synthetic_face import draw_face, identity_for

DATASET = "synthetic_clips"
CLASSES = ("happy", "sad", "surprise", "anger")  # well apart in the synthetic faces
FPS = 23.0
SIDE = 48
# Face settings a preprocess run would record (the checkpoint carries them on).
FACE = {"size": SIDE, "color": "gray"}


def split_of(index: int, subjects: int) -> str:
    """Subject-disjoint: the last two subjects test, the two before them val, the rest train."""
    return "test" if index >= subjects - 2 else "val" if index >= subjects - 4 else "train"


def clip_frames(expression: str, subject: str, frames: int, rng: np.random.Generator,
                invalid: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, 48, 48, 1) uint8 frames of the expression growing from 0 to full intensity, their
    (T, 68, 2) landmarks and the valid mask; frames listed in `invalid` are blank, NaN."""
    identity = identity_for(subject)
    crops = np.zeros((frames, SIDE, SIDE, 1), np.uint8)
    points = np.full((frames, N_VALUES // 2, 2), np.nan, np.float32)
    valid = np.ones(frames, bool)
    valid[list(invalid)] = False
    # One take: pose, lighting and exposure are drawn once per clip (each frame redraws them
    # from the same seed), so only the expression changes from frame to frame.
    take_seed, angle = int(rng.integers(2**31)), rng.uniform(-3, 3)
    for t in np.flatnonzero(valid):
        intensity = t / max(frames - 1, 1)
        image, landmarks = draw_face(expression, identity, size=SIDE, rng=np.random.default_rng(take_seed),
                                     face_scale=1.6, intensity=intensity, angle_deg=angle)
        crops[t, :, :, 0], points[t] = image, landmarks
    return crops, points, valid


def clip_row(expression: str, subject: str, split: str, take: int, frames: int,
             rng: np.random.Generator, invalid: tuple[int, ...] = ()) -> dict:
    """One clips/ row, every CLIPS column as the ingest fills it."""
    crops, points, valid = clip_frames(expression, subject, frames, rng, invalid)
    source_uri = f"synthetic://{subject}/{expression}-{take}.avi"
    duration = 1.5
    return {
        "clip_id": hashlib.sha1(f"{DATASET}/{source_uri}".encode()).hexdigest()[:16],
        "dataset": DATASET, "source_uri": source_uri, "subject": subject, "split": split,
        "label": CANONICAL.index(expression), "label_name": expression, "clip_length": frames,
        "frames": crops.tobytes(), "frame_shape": list(crops.shape),
        "landmarks": points.reshape(-1).tolist(),
        "timestamps_s": np.linspace(0, duration, frames, endpoint=False).tolist(),
        "frame_indices": np.linspace(0, duration * FPS, frames, endpoint=False).astype(int).tolist(),
        "valid": valid.tolist(), "n_valid": int(valid.sum()), "repeated": False, "track_id": 0,
        "detector": "synthetic", "landmarker": "synthetic", "duration_s": duration, "fps": FPS,
    }


def clip_table(subjects: int = 10, takes: int = 2, frames: int = 12, seed: int = 0,
               classes: tuple[str, ...] = CLASSES) -> pa.Table:
    """subjects x classes x takes clips; every third clip has one lost (blank) frame."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(subjects):
        subject = f"S{index:03d}"
        for expression in classes:
            for take in range(takes):
                invalid = (int(rng.integers(frames)),) if len(rows) % 3 == 0 else ()
                rows.append(clip_row(expression, subject, split_of(index, subjects), take, frames, rng, invalid))
    return pa.Table.from_pylist(rows, schema=CLIPS)


def write_clip_shards(output: str, parts: int = 2, **kw) -> results.Commit:
    """Publish clip_table(**kw) at `output` as a committed preprocess result with clips/ in
    `parts` Parquet files (so readers see more than one file)."""
    table = clip_table(**kw)
    step = -(-table.num_rows // parts)
    pieces = [table.slice(start, step) for start in range(0, table.num_rows, step)]
    return results.commit_tables(output, "preprocess", {"clips": pieces}, run_config={"face": FACE})
