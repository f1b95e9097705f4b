"""MPI facial expression database: `<root>/Subset NN/<expression>/islf_<expression>_NNN.png`.

The class is the expression folder's name. The file-name prefix before the first `_`
(`islf`) identifies the recorded person, so it is the subject for the split.
"""
from __future__ import annotations

from fer_ray import storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import IMAGE_EXTENSIONS, basename, input_row, parent_name, with_splits
from fer_ray.datasets.folder import class_label


def list_inputs(cfg: PreprocessConfig) -> list[dict]:
    rows = []
    for uri in storage.list_files(cfg.input, IMAGE_EXTENSIONS):
        label, error = class_label(parent_name(uri))
        subject = basename(uri).split("_")[0]
        rows.append(input_row(uri, "mpi", subject=subject, label=label,
                              status="unknown_class" if error else "", error=error))
    return with_splits(rows, cfg.split)
