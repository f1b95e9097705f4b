"""MPI facial expression database: `<root>/Subset NN/<expression>/islf_<expression>_NNN.png`.

The class is the expression folder's name. The file-name prefix before the first `_`
(`islf`) identifies the recorded person, so it is the subject for the split.
"""
from __future__ import annotations

from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import Lister, basename, input_row, listed_rows, parent_name, with_splits
from fer_ray.datasets.folder import class_label
from fer_ray.schema import Status


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> list[dict]:
    return with_splits(listed_rows(lister(cfg.input), "mpi", image_row), cfg.split, cfg.input)


def image_row(uri: str) -> dict:
    label, error = class_label(parent_name(uri))
    return input_row(uri, "mpi", subject=basename(uri).split("_")[0], label=label,
                     status=Status.UNKNOWN_CLASS if error else "", error=error)
