"""JAFFE: `KA.AN1.39.tiff` = subject initials . expression code + take . running number."""
from __future__ import annotations

import re

from fer_ray import labels
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import Lister, basename, input_row, listed_rows, with_splits
from fer_ray.schema import Status

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


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> list[dict]:
    return with_splits(listed_rows(lister(cfg.input), "jaffe", image_row), cfg.split, cfg.input)


def image_row(uri: str) -> dict:
    subject, label, error = parse_name(basename(uri))
    return input_row(uri, "jaffe", subject=subject, label=label, status=Status.BAD_LABEL if error else "", error=error)
