"""FetchStage: read input bytes and sidecar annotations, many requests in flight at once."""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from fer_ray import schema, storage
from fer_ray.runtime import LIGHT_CPUS
from fer_ray.schema import Status
from fer_ray.stages.base import Stage, batch_rows


def fetched_by_face_stage(cfg) -> bool:
    """Whether the face actors read their inputs themselves, with no FetchStage before them:
    inputs on a local or mounted file system, listed one by one. Such a read costs less than
    what a separate operator costs Ray Data (its tasks and their worker processes, the bytes
    through the object store): on 12,000 AffectNet-shaped inputs on 2 cores, 187.5-188.1
    images/s against 171.9-177.9 (alternating). An object store's latency is better hidden by
    an operator of its own, whose tasks wait while the actors compute."""
    from fer_ray.datasets import streams_its_file

    return not storage.is_s3(cfg.input) and not streams_its_file(cfg.layout)


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
            self.fetch_all(rows, pool)
        return schema.table_from_rows(rows, schema.INPUT_ROWS)

    def fetch_all(self, rows: list[dict], pool: ThreadPoolExecutor) -> None:
        list(pool.map(self.fetch, rows))

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
