"""A preprocess run's inputs as a Ray Data read: the rows listed on the driver, fetched by
FetchStage, or FER2013's CSV streamed by one read task. A read, never from_items: Ray
Data's row checkpointing filters only what a read yields (a resumed run skips there)."""
from __future__ import annotations

import ray.data

from fer_ray import datasets
from fer_ray.config import PreprocessConfig
from fer_ray.datasets import Inputs, RowsDatasource
from fer_ray.runtime import LIGHT_CPUS
from fer_ray.stages.base import apply_stage
from fer_ray.stages.fetch import FetchStage


def read_inputs(cfg: PreprocessConfig, inputs: Inputs) -> ray.data.Dataset:
    """Input rows (see datasets.common.input_row) with bytes and labels filled in."""
    if inputs.rows is None:
        return read_stream(cfg)
    listed = ray.data.read_datasource(RowsDatasource(inputs.rows), num_cpus=LIGHT_CPUS)
    return apply_stage(listed, FetchStage, cfg)


def read_stream(cfg: PreprocessConfig) -> ray.data.Dataset:
    """A layout that streams its own file (FER2013's CSV), block by block as it is parsed."""
    source, block_bytes = datasets.layout_module(cfg.layout).datasource(cfg)
    ds = ray.data.read_datasource(source, num_cpus=LIGHT_CPUS, override_num_blocks=1)
    ds.context.target_max_block_size = block_bytes  # this pipeline's blocks only
    return ds
