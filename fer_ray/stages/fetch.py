"""FetchStage: read input bytes and sidecar annotations, many requests in flight at once."""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from fer_ray import schema, storage
from fer_ray.runtime import LIGHT_CPUS
from fer_ray.schema import Status
from fer_ray.stages.base import Stage, batch_rows


class FetchStage(Stage):
    """Fills `data` from `source_uri` and lets the layout read its annotations.

    Object stores reward concurrency, not sequence: each batch's reads run on a thread
    pool. Transient storage errors are retried (cfg.retry); an error about the object
    itself (missing, denied) becomes the input's `read_error`, never the job's end; storage
    that stays unreachable ends the run (StorageUnavailable), resumable, with no input blamed.
    """
    num_cpus = LIGHT_CPUS  # waits on storage; the threads do the waiting
    threads = 16

    def __init__(self, cfg):
        from fer_ray.datasets import annotator

        super().__init__(cfg)
        self.annotate = annotator(cfg.layout)
        self.read = functools.partial(storage.read_bytes, retry=cfg.retry)

    def __call__(self, batch: dict) -> pa.Table:
        rows = batch_rows(batch)
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self.fetch, rows))
        return schema.table_from_rows(rows, schema.INPUT_ROWS)

    def fetch(self, row: dict) -> None:
        if row["status"]:
            return  # decided already (bad label, skipped frame...): nothing to read
        try:
            if not row["data"]:
                row["data"] = self.read(row["source_uri"])
            if self.annotate:
                self.annotate(row, self.read)
        except OSError as err:  # about this object: StorageUnavailable is no OSError
            row["status"], row["error"] = Status.READ_ERROR, f"{type(err).__name__}: {err}"[:500]
