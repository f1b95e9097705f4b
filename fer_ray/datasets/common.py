"""What every layout reader produces: one input row per source item, same columns.

Readers list inputs on the driver (metadata only, one listing call per prefix page);
bytes and sidecar annotations are fetched in parallel inside Ray tasks (FetchStage).
"""
from __future__ import annotations

import hashlib
import posixpath
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fer_ray import schema, storage
from fer_ray.config import RetryConfig, SplitConfig
from fer_ray.schema import Status


def input_row(source_uri: str, dataset: str, **values) -> dict:
    """One input (a row of schema.INPUT_ROWS). `status` is '' until something decides its fate."""
    return schema.row(schema.INPUT_ROWS, source_uri=source_uri, dataset=dataset, **values)


def subject_fraction(subject: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a subject and seed."""
    digest = hashlib.sha1(f"{seed}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(subjects: Iterable[str], cfg: SplitConfig) -> dict[str, str]:
    """Subject-disjoint split: every subject goes wholly to train, val or test.

    Subjects are ordered by a seeded hash and cut by the configured fractions, so the
    result is deterministic, independent of listing order, and no person crosses splits.
    Each split with a non-zero fraction gets at least one subject when there are enough.
    """
    unique = sorted(set(subjects))
    fractions = np.fromiter((subject_fraction(s, cfg.seed) for s in unique), np.float64, count=len(unique))
    return dict(zip(unique, split_names(fractions, cfg)))


SPLITS = np.array(["test", "val", "train"])


def split_names(fractions: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """The split of each distinct subject, from its subject_fraction: the lowest fractions go
    to test, the next to val, the rest to train."""
    n = len(fractions)
    n_test = _share(n, cfg.test)
    n_val = _share(n - n_test, cfg.val / max(cfg.val + cfg.train, 1e-9)) if n - n_test > 1 else 0
    rank = np.empty(n, np.int64)
    rank[np.argsort(fractions, kind="stable")] = np.arange(n)
    return SPLITS[(rank >= n_test).astype(int) + (rank >= n_test + n_val)]


def subject_fractions(subjects: pa.Array, seed: int, chunk: int = 65536) -> np.ndarray:
    """subject_fraction of each subject of an Arrow array, a chunk of Python strings at a time."""
    return np.concatenate([np.array([subject_fraction(s, seed) for s in subjects.slice(start, chunk).to_pylist()],
                                    np.float64) for start in range(0, len(subjects), chunk)] or [np.zeros(0)])


def relative_names(uris: pa.ChunkedArray, root: str) -> pa.ChunkedArray:
    """relative_name of each URI of a column, without a Python string per row when every URI
    is below `root` (as a listing's are)."""
    prefix = _below(root)
    if root and pc.all(pc.starts_with(uris, prefix)).as_py() is not False:
        return pc.utf8_slice_codeunits(uris, len(prefix))
    return pa.chunked_array([pa.array([relative_name(uri, root) for uri in uris.to_pylist()], pa.string())])


def _share(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def relative_name(uri: str, root: str) -> str:
    """A file's name below the input `root` (its whole URI if it is not below it): a file's
    split must not depend on where the dataset is stored (a bucket, a local copy, a mount)."""
    prefix = _below(root)
    return uri[len(prefix):] if root and uri.startswith(prefix) else uri


def _below(root: str) -> str:
    """The prefix of every URI below `root`."""
    return root.rstrip("/") + "/"


def with_splits(rows: list[dict], cfg: SplitConfig, root: str) -> list[dict]:
    """Fill `split` from `subject` (subject-disjoint); rows without a subject split by file,
    by its name below the input `root`. Names that are not inputs at all (other formats, bad
    links) take no part, so they cannot move a subject to another split."""
    inputs = [row for row in rows if row["status"] not in NOT_INPUTS]
    keys = [row["subject"] or relative_name(row["source_uri"], root) for row in inputs]
    split_of = assign_splits(keys, cfg)
    for row, key in zip(inputs, keys):
        row["split"] = split_of[key]
    return rows


def with_split_column(rows: pa.Table, cfg: SplitConfig, root: str) -> pa.Table:
    """with_splits for a table of input rows, column by column (the same splits). Without
    subjects the keys are the file names, distinct already (a listing names each file once),
    which spares hashing a million names into a set."""
    inputs = pc.invert(pc.is_in(rows["status"], pa.array([str(s) for s in NOT_INPUTS])))
    no_subjects = pc.all(pc.equal(rows["subject"], "")).as_py() is not False
    names = relative_names(rows["source_uri"], root)
    keys = names if no_subjects else pc.if_else(pc.equal(rows["subject"], ""), names, rows["subject"])
    keys = keys if pc.all(inputs).as_py() is not False else pc.filter(keys, inputs)
    if no_subjects:
        split = split_names(subject_fractions(keys, cfg.seed), cfg)
    else:
        subjects = pc.unique(keys)
        split = pc.take(pa.array(split_names(subject_fractions(subjects, cfg.seed), cfg)), pc.index_in(keys, subjects))
    split = pc.replace_with_mask(rows["split"].combine_chunks(), inputs.combine_chunks(), pa.array(split, pa.string()))
    return rows.set_column(rows.schema.get_field_index("split"), "split", split)


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def parent_name(uri: str, levels: int = 1) -> str:
    """Name of the directory `levels` above a file."""
    path = uri.rstrip("/")
    for _ in range(levels):
        path = posixpath.dirname(path)
    return posixpath.basename(path)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")
# Statuses of listed names that are never read as inputs.
NOT_INPUTS = (Status.UNSUPPORTED_FORMAT, Status.BAD_NAME, Status.DANGLING_LINK, Status.NOT_FOLLOWED, Status.NOT_A_FILE,
              Status.NO_VIDEOS)


class Lister:
    """Lists input directories for a layout and fingerprints everything it listed, so the
    run's input fingerprint covers exactly what the layout read. It keeps the running hash,
    not the names: a million listed names are held once, by the layout."""

    def __init__(self, retry: RetryConfig | None = None):
        self.retry = retry
        self.digest = hashlib.sha1()

    def __call__(self, uri: str) -> list[storage.Listed]:
        found = storage.list_tree(uri, self.retry)
        storage.add_to_fingerprint(self.digest, found)
        return found

    def fingerprint(self) -> str:
        return self.digest.hexdigest()[:16]


def listed_rows(entries: list[storage.Listed], dataset: str, image_row) -> list[dict]:
    """One input row per listed name: `image_row(uri)` for an image, else its problem."""
    return [unusable_row(entry, dataset) or image_row(entry.uri) for entry in entries]


def listed_table(entries: Iterable[storage.Listed], dataset: str, image_row) -> pa.Table:
    """listed_rows as a table of schema.INPUT_ROWS, converted as the rows are made: a listing
    of a million names never holds a million row dicts (one Arrow table instead)."""
    rows = (unusable_row(entry, dataset) or image_row(entry.uri) for entry in entries)
    return schema.rows_table(rows, schema.INPUT_ROWS)


def unusable_row(entry: storage.Listed, dataset: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
                 kind: str = "an image") -> dict | None:
    """The input row of a listed name that cannot be an input (a dangling link, a name that
    is not UTF-8, a file without one of `extensions`), with its status; None otherwise.
    Every listed name becomes exactly one input, so every one is in the manifest."""
    if entry.problem:
        return input_row(entry.uri, dataset, status=entry.problem, error=entry.error)
    if not entry.uri.lower().endswith(extensions):
        return input_row(entry.uri, dataset, status=Status.UNSUPPORTED_FORMAT,
                         error=f"not {kind} file this job reads ({', '.join(extensions)})")
    return None
