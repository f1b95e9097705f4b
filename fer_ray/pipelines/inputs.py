"""A preprocess run's inputs: checked and listed on the driver before any Ray work (images and
videos alike), then read as a Ray Data read: the listed rows fetched by FetchStage (by the
face actors themselves from a file system), or FER2013's CSV streamed by one read task. A
read, never from_items: Ray Data's row checkpointing filters only what a read yields (a
resumed run skips there)."""
from __future__ import annotations

import ray.data

from fer_ray import datasets
from fer_ray.config import ConfigError, PreprocessConfig
from fer_ray.datasets import Inputs, RowsDatasource
from fer_ray.pipelines import runs
from fer_ray.runtime import LIGHT_CPUS
from fer_ray.stages.base import apply_stage
from fer_ray.stages.face import FaceStage
from fer_ray.stages.fetch import FetchStage, fetched_by_face_stage


def check(cfg: PreprocessConfig) -> Inputs:
    """Everything that can be known wrong before any Ray work: values, weights, input,
    output; returns the inputs (listed once, here)."""
    cfg.validate()
    runs.absolute_paths(cfg)
    FaceStage.check_weights(cfg)
    runs.check_input_output(cfg.input, cfg.output, cfg.retry)
    if cfg.layout == "fer2013":
        from fer_ray.datasets.fer2013 import check_header

        try:
            check_header(cfg.input)
        except (ValueError, IsADirectoryError, OSError) as err:
            raise ConfigError(str(err)) from None
    return datasets.list_inputs(cfg)


def read_inputs(cfg: PreprocessConfig, inputs: Inputs) -> ray.data.Dataset:
    """Input rows (see datasets.common.input_row) with bytes and labels filled in."""
    if inputs.rows is None:
        return read_stream(cfg)
    listed = ray.data.read_datasource(RowsDatasource(inputs.rows), num_cpus=LIGHT_CPUS)
    return listed if fetched_by_face_stage(cfg) else apply_stage(listed, FetchStage, cfg)


def read_stream(cfg: PreprocessConfig) -> ray.data.Dataset:
    """A layout that streams its own file (FER2013's CSV), block by block as it is parsed."""
    source, block_bytes = datasets.layout_module(cfg.layout).datasource(cfg)
    ds = ray.data.read_datasource(source, num_cpus=LIGHT_CPUS, override_num_blocks=1)
    ds.context.target_max_block_size = block_bytes  # this pipeline's blocks only
    return ds
