"""Generic `<class name>/<video>` tree (AFEW/DFEW-style folders, users' own); class names go
through the synonym table as the `folder` image layout's do. No subject: split by file."""
from __future__ import annotations

from fer_ray.config import VIDEO_EXTENSIONS, PreprocessConfig
from fer_ray.datasets.common import Lister, input_row, parent_name, unusable_row, with_splits
from fer_ray.datasets.folder import class_label
from fer_ray.schema import Status

DATASET = "video_folder"


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> list[dict]:
    rows = [unusable_row(entry, DATASET, VIDEO_EXTENSIONS, "a video") or video_row(entry.uri)
            for entry in lister(cfg.input)]
    return with_splits(rows, cfg.split, cfg.input)


def video_row(uri: str) -> dict:
    label, error = class_label(parent_name(uri))
    return input_row(uri, DATASET, label=label, status=Status.UNKNOWN_CLASS if error else "", error=error)
