"""Generic `<class name>/<image>` tree; class names go through the synonym table."""
from __future__ import annotations

from fer_ray import labels, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import IMAGE_EXTENSIONS, input_row, parent_name, with_splits


def class_label(folder: str) -> tuple[int, str]:
    """(canonical label, error) for a class folder name."""
    label = labels.canonical_from_name(folder)
    if label == labels.UNKNOWN:
        return label, (f"unknown class folder {folder!r}; known names: "
                       f"{', '.join(sorted(labels.SYNONYMS))}")
    return label, ""


def list_inputs(cfg: PreprocessConfig) -> list[dict]:
    rows = []
    for uri in storage.list_files(cfg.input, IMAGE_EXTENSIONS):
        label, error = class_label(parent_name(uri))
        rows.append(input_row(uri, "folder", label=label,
                              status="unknown_class" if error else "", error=error))
    return with_splits(rows, cfg.split)
