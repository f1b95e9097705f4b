"""One module per raw layout. `list_inputs(cfg)` finds a layout's inputs on the driver
(metadata only, before any Ray work); the layouts' datasources yield them to Ray Data
(pipelines.inputs builds the read)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from fer_ray import schema, storage
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
    """What a run will read: the input rows, one Arrow table of schema.INPUT_ROWS (None where
    the layout streams its own file), how many inputs there are, and a fingerprint of what
    was listed."""
    rows: pa.Table | None
    count: int
    fingerprint: str


def streams_its_file(layout: str) -> bool:
    """Whether the layout streams its own file (FER2013's CSV) rather than listing inputs."""
    return hasattr(layout_module(layout), "count_inputs")


def list_inputs(cfg: PreprocessConfig) -> Inputs:
    """The layout's inputs, each listed name once; a ConfigError if there are none."""
    module = layout_module(cfg.layout)
    if streams_its_file(cfg.layout):
        count, fingerprint = module.count_inputs(cfg)
        return Inputs(None, count, fingerprint)
    if storage.is_file(cfg.input, cfg.retry):
        raise ConfigError(f"input: {cfg.input} is a file; layout {cfg.layout!r} reads a directory")
    lister = Lister(cfg.retry)
    try:
        rows = module.list_inputs(cfg, lister)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise ConfigError(f"input: {cfg.input} is not a {cfg.layout} dataset: {err}") from None
    if not isinstance(rows, pa.Table):  # a layout of few files builds row dicts
        rows = schema.rows_table(rows, schema.INPUT_ROWS)
    rows = rows.slice(0, cfg.limit) if cfg.limit else rows
    if not rows.num_rows:
        raise ConfigError(f"input: no files under {cfg.input} for layout {cfg.layout!r}")
    return Inputs(rows, rows.num_rows, lister.fingerprint())


class RowsDatasource(Datasource):
    """Rows listed on the driver (a table, or row dicts, of `row_schema`), yielded by read
    tasks of `rows_per_task` rows each."""
    ROWS_PER_TASK = 256

    def __init__(self, rows: pa.Table | list[dict], row_schema=schema.INPUT_ROWS, rows_per_task: int = ROWS_PER_TASK):
        self.rows = rows if isinstance(rows, pa.Table) else schema.table_from_rows(rows, row_schema)
        self.row_schema, self.rows_per_task = row_schema, rows_per_task

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        return [self.task(own_copy(self.rows.slice(start, self.rows_per_task)))
                for start in range(0, self.rows.num_rows, self.rows_per_task)]

    @staticmethod
    def task(rows: pa.Table) -> ReadTask:
        meta = BlockMetadata(num_rows=rows.num_rows, size_bytes=rows.nbytes, exec_stats=None, input_files=None)
        return ReadTask(lambda: [rows], meta)


def own_copy(rows: pa.Table) -> pa.Table:
    """A slice with buffers of its own: a pickled slice carries its parent's whole buffers,
    which would send the full listing with every read task."""
    return rows.take(np.arange(rows.num_rows))
