"""JAFFE: `KA.AN1.39.tiff` = subject initials . expression code + take . running number."""
from __future__ import annotations

import re

from fer_ray import labels, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import IMAGE_EXTENSIONS, basename, input_row, with_splits

NAME = re.compile(r"^(?P<subject>[A-Za-z]+)\.(?P<code>[A-Za-z]{2})\d*\.\d+\.\w+$")


def parse_name(name: str) -> tuple[str, int, str]:
    """(subject, canonical label, error) from a JAFFE file name."""
    match = NAME.match(name)
    if not match:
        return "", labels.UNKNOWN, f"file name {name!r} does not match SUBJECT.CODEn.N.ext"
    code = match["code"].upper()
    if code not in labels.JAFFE:
        return match["subject"], labels.UNKNOWN, (
            f"expression code {code!r} not one of {', '.join(labels.JAFFE)}")
    return match["subject"], labels.CANONICAL_INDEX[labels.JAFFE[code]], ""


def list_inputs(cfg: PreprocessConfig) -> list[dict]:
    rows = []
    for uri in storage.list_files(cfg.input, IMAGE_EXTENSIONS):
        subject, label, error = parse_name(basename(uri))
        rows.append(input_row(uri, "jaffe", subject=subject, label=label,
                              status="bad_label" if error else "", error=error))
    return with_splits(rows, cfg.split)
