"""FetchStage: read input bytes and sidecar annotations, many requests in flight at once."""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fer_ray import storage
from fer_ray.face68 import N_VALUES
from fer_ray.stages.base import LIGHT_CPUS, Stage, batch_rows, rows_batch


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

    def __call__(self, batch: dict) -> dict:
        rows = batch_rows(batch)
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self.fetch, rows))
        return rows_batch(rows)

    def fetch(self, row: dict) -> None:
        row["hint_landmarks"] = np.full(N_VALUES, np.nan, np.float32)
        if row["status"]:
            return  # decided already (bad label, skipped frame...): nothing to read
        try:
            if not row["data"]:
                row["data"] = self.read(row["source_uri"])
            if self.annotate:
                self.annotate(row, self.read)
        except OSError as err:  # about this object: StorageUnavailable is no OSError
            row["status"], row["error"] = "read_error", f"{type(err).__name__}: {err}"[:500]
