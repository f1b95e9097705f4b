"""One module per raw layout; `read(cfg)` gives the input rows of any layout as a Dataset."""
from __future__ import annotations

import importlib

import ray.data

from fer_ray.config import LAYOUTS, PreprocessConfig


def layout_module(layout: str):
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not valid; choose one of: {', '.join(LAYOUTS)}")
    return importlib.import_module(f"fer_ray.datasets.{layout}")


def annotator(layout: str):
    """The layout's per-row annotation reader (runs inside FetchStage), or None."""
    return getattr(layout_module(layout), "annotate", None)


def read(cfg: PreprocessConfig) -> ray.data.Dataset:
    """Input rows (see datasets.common.input_row) with bytes and labels filled in."""
    from fer_ray.stages.base import apply_stage
    from fer_ray.stages.fetch import FetchStage

    module = layout_module(cfg.layout)
    if hasattr(module, "read"):
        return module.read(cfg)  # streams its own file (FER2013's CSV)
    rows = module.list_inputs(cfg)
    if cfg.limit:
        rows = rows[: cfg.limit]
    if not rows:
        raise ValueError(f"input: no images found under {cfg.input} for layout {cfg.layout!r}")
    return apply_stage(ray.data.from_items(rows), FetchStage, cfg)
