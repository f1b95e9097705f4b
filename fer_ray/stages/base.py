"""How any stage is applied to a dataset: every stage is mapped through `apply_stage`.
(Small per-batch conversions in pipelines/ and training/ call `map_batches` themselves.)

A stage is a plain class (usable without Ray): `__init__(cfg)` loads what it needs once,
`__call__(batch)` maps a dict of numpy arrays to a dict of numpy arrays, or to an Arrow
table when its rows already have their output types (Ray keeps a table as the block; from
numpy it would build tensor columns that the writer must convert back). Class attributes
declare its needs; `apply_stage` turns them into the right `map_batches` call.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import ray.data
from ray.data.context import ShuffleStrategy

from fer_ray.runtime import ACTOR_TASK_RETRIES, SYSTEM_FAILURE_RETRIES, actor_pool_size, available_cpus


class Stage:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    is_actor: bool = False  # True when __init__ loads models worth keeping between batches
    batch_size: int = 32

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, batch: dict) -> dict:
        raise NotImplementedError


def apply_stage(ds: ray.data.Dataset, stage_cls: type[Stage], cfg, *, workers: int = 0,
                batch_size: int | None = None, num_gpus: float | None = None,
                num_cpus: float | None = None, whole_blocks: bool = False) -> ray.data.Dataset:
    """Map a stage over a dataset: a pool of `workers` actors for model stages, tasks otherwise.
    whole_blocks: each block is one batch, whatever its size (batch_size is ignored).

    num_gpus and num_cpus override the stage's own needs (a stage whose models can run on
    either; a stage that is light in one pipeline); a GPU pool defaults to as many actors as
    the cluster's GPUs hold."""
    gpus = stage_cls.num_gpus if num_gpus is None else num_gpus
    kwargs = dict(batch_size=None if whole_blocks else batch_size or stage_cls.batch_size, batch_format="numpy",
                  num_cpus=stage_cls.num_cpus if num_cpus is None else num_cpus, num_gpus=gpus)
    if not stage_cls.is_actor:
        # Cheap to build (no model): plain tasks, which Ray can fuse with neighbouring maps.
        return _map_with_retries(ds, _run_task_stage, fn_args=(stage_cls, cfg), max_retries=SYSTEM_FAILURE_RETRIES,
                                 **kwargs)
    pool = ray.data.ActorPoolStrategy(size=actor_pool_size(workers, gpus, reserved_cpus=0))
    return _map_with_retries(ds, stage_cls, fn_constructor_args=(cfg,), compute=pool, max_restarts=-1,
                             max_task_retries=ACTOR_TASK_RETRIES, **kwargs)


def _map_with_retries(ds: ray.data.Dataset, fn, **kwargs) -> ray.data.Dataset:
    """map_batches with retry settings. Ray 2.60 has no named parameter for them and warns
    that remote arguments passed by keyword go away in 2.64, which the pin never reaches."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs)


def apply_group_stage(ds: ray.data.Dataset, key: str, stage_cls: type[Stage], cfg) -> ray.data.Dataset:
    """Map a stage over all rows of each `key` value at once (a Ray Data groupby shuffle:
    the groups are formed on the cluster, never collected on the driver).

    At most one task per CPU at once: the groups all come after the shuffle's barrier, and a
    light stage's fraction of a CPU would let ten run on two cores, Ray starting a worker
    process for each that imports the stage's libraries (label-videos' reduce: PyAV, OpenCV,
    Pillow; matplotlib too until f4aa9c3)."""
    return ds.groupby(key).map_groups(_run_task_stage, fn_args=(stage_cls, cfg), batch_format="numpy",
                                      num_cpus=stage_cls.num_cpus, num_gpus=stage_cls.num_gpus,
                                      concurrency=available_cpus())


@contextlib.contextmanager
def sort_shuffle():
    """Group with Ray Data's sort-based shuffle while the job runs. The default hash shuffle
    starts aggregator actors first: about 10 s more on the sample data, measured side by side."""
    context = ray.data.DataContext.get_current()
    previous = context.shuffle_strategy
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        context.shuffle_strategy = previous


def _run_task_stage(batch: dict, stage_cls: type[Stage], cfg) -> dict:
    return stage_cls(cfg)(batch)


def batch_rows(batch: dict) -> list[dict]:
    """A columnar batch as a list of row dicts (for per-item logic)."""
    n = len(next(iter(batch.values()))) if batch else 0
    return [{name: column[i] for name, column in batch.items()} for i in range(n)]


def rows_batch(rows: list[dict]) -> dict:
    """Row dicts (all with the same keys) back into a columnar batch."""
    return {name: _column([row[name] for row in rows]) for name in rows[0]} if rows else {}


def _column(values: list) -> np.ndarray:
    if isinstance(values[0], np.ndarray):
        return np.stack(values)
    if isinstance(values[0], (str, bytes)):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values)
