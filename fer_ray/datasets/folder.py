"""Generic `<class name>/<image>` tree; class names go through the synonym table."""
from __future__ import annotations

import functools

import pyarrow as pa

from fer_ray import labels
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import Lister, input_row, listed_table, parent_name, with_split_column
from fer_ray.schema import Status


@functools.lru_cache(maxsize=4096)  # a few class folders, a million images
def class_label(folder: str) -> tuple[int, str]:
    """(canonical label, error) for a class folder name."""
    label = labels.canonical_from_name(folder)
    if label == labels.UNKNOWN:
        return label, (f"unknown class folder {folder!r} (the class is the name of the folder holding the "
                       f"file: <class name>/<file>); known names: "
                       f"{', '.join(sorted(labels.SYNONYMS))}")
    return label, ""


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> pa.Table:
    """The input rows as one Arrow table (this is the layout of huge flat image trees)."""
    return with_split_column(listed_table(lister(cfg.input), "folder", image_row), cfg.split, cfg.input)


def image_row(uri: str) -> dict:
    label, error = class_label(parent_name(uri))
    return input_row(uri, "folder", label=label, status=Status.UNKNOWN_CLASS if error else "", error=error)
