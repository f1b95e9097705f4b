"""One module per raw layout. `list_inputs(cfg)` finds a layout's inputs on the driver
(metadata only, before any Ray work); the layouts' datasources yield them to Ray Data
(pipelines.inputs builds the read)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from fer_ray import schema
from fer_ray.config import LAYOUTS, ConfigError, PreprocessConfig
from fer_ray.datasets.common import Lister


def layout_module(layout: str):
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not valid; choose one of: {', '.join(LAYOUTS)}")
    return importlib.import_module(f"fer_ray.datasets.{layout}")


def annotator(layout: str):
    """The layout's per-row annotation reader (runs inside FetchStage), or None."""
    return getattr(layout_module(layout), "annotate", None)


@dataclass
class Inputs:
    """What a run will read: the input rows (None where the layout streams its own file),
    how many inputs there are, and a fingerprint of what was listed."""
    rows: list[dict] | None
    count: int
    fingerprint: str


def list_inputs(cfg: PreprocessConfig) -> Inputs:
    """The layout's inputs, each listed name once; a ConfigError if there are none."""
    module = layout_module(cfg.layout)
    if hasattr(module, "count_inputs"):  # streams its own file (FER2013's CSV)
        count, fingerprint = module.count_inputs(cfg)
        return Inputs(None, count, fingerprint)
    lister = Lister(cfg.retry)
    try:
        rows = module.list_inputs(cfg, lister)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise ConfigError(f"input: {cfg.input} is not a {cfg.layout} dataset: {err}") from None
    rows = rows[: cfg.limit] if cfg.limit else rows
    if not rows:
        raise ConfigError(f"input: no files under {cfg.input} for layout {cfg.layout!r}")
    return Inputs(rows, len(rows), lister.fingerprint())


class RowsDatasource(Datasource):
    """Rows listed on the driver (of `row_schema`), yielded by read tasks of `rows_per_task` rows each."""
    ROWS_PER_TASK = 256

    def __init__(self, rows: list[dict], row_schema=schema.INPUT_ROWS, rows_per_task: int = ROWS_PER_TASK):
        self.rows, self.row_schema, self.rows_per_task = rows, row_schema, rows_per_task

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        return [self.task(self.rows[start:start + self.rows_per_task], self.row_schema)
                for start in range(0, len(self.rows), self.rows_per_task)]

    @staticmethod
    def task(rows: list[dict], row_schema=schema.INPUT_ROWS) -> ReadTask:
        meta = BlockMetadata(num_rows=len(rows), size_bytes=None, exec_stats=None, input_files=None)
        return ReadTask(lambda: [schema.table_from_rows(rows, row_schema)], meta)
