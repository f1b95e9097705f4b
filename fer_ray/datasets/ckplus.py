"""CK+: `cohn-kanade-images/Sxxx/yyy/*.png`, labels in `Emotion/Sxxx/yyy/*_emotion.txt`.

Only the peak (last) frames of a labelled sequence carry its label; the first frame of
every sequence shows a neutral face. Frames in between are listed in the manifest as
`skipped` (never read), so every image under the input is accounted for.
"""
from __future__ import annotations

import itertools

from fer_ray import labels, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import Lister, input_row, parent_name, unusable_row, with_splits
from fer_ray.schema import Status


def sequence_key(uri: str) -> tuple[str, str]:
    return parent_name(uri, 2), parent_name(uri)  # (subject, sequence)


def emotion_files(cfg: PreprocessConfig, lister: Lister) -> dict[tuple[str, str], str]:
    """{(subject, sequence): emotion file URI}."""
    root = storage.join(cfg.input, "Emotion")
    if not storage.exists(root, cfg.retry):
        return {}
    return {sequence_key(e.uri): e.uri for e in lister(root) if not e.problem and e.uri.endswith("_emotion.txt")}


def frame_rows(frames: list[str], emotion_uri: str | None, cfg: PreprocessConfig) -> list[dict]:
    """Rows of one sequence: peak frames labelled via the emotion file, first frame neutral."""
    peak = set(frames[-cfg.ckplus_peak_frames:]) if emotion_uri and cfg.ckplus_peak_frames else set()
    rows = []
    for index, uri in enumerate(frames):
        row = input_row(uri, "ckplus", subject=sequence_key(uri)[0])
        if uri in peak:
            row["sidecar"] = emotion_uri
        elif index == 0 and cfg.ckplus_neutral_first:
            row["label"] = labels.CANONICAL_INDEX["neutral"]
        else:
            row["status"], row["error"] = Status.SKIPPED, (
                "CK+ frame neither first nor among the last "
                f"{cfg.ckplus_peak_frames} of a labelled sequence")
        rows.append(row)
    return rows


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> list[dict]:
    entries = lister(storage.join(cfg.input, "cohn-kanade-images"))
    emotions = emotion_files(cfg, lister)
    rows = [row for row in (unusable_row(e, "ckplus") for e in entries) if row]
    images = [e.uri for e in entries if not unusable_row(e, "ckplus")]
    for key, frames in itertools.groupby(images, key=sequence_key):
        rows.extend(frame_rows(sorted(frames), emotions.get(key), cfg))
    return with_splits(rows, cfg.split, cfg.input)


def annotate(row: dict, read) -> None:
    """Label a peak frame from its sequence's emotion file (one float, CK+ coding)."""
    if not row["sidecar"]:
        return
    label, error = labels.parse_ckplus_code(read(row["sidecar"]))
    if error:
        row["status"], row["error"] = Status.BAD_LABEL, error
        return
    row["label"] = label
