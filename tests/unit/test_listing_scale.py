"""A million inputs on the driver, without Ray: every listed name becomes exactly one input row
of one compact Arrow table, the splits are those of the row-by-row code, and read tasks carry
only their own rows."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pyarrow as pa

from fer_ray import schema, storage
from fer_ray.config import PreprocessConfig, SplitConfig
from fer_ray.datasets import RowsDatasource, folder
from fer_ray.datasets.common import input_row, listed_rows, with_split_column, with_splits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MILLION = 1_000_000

# Runs in a fresh interpreter, so its peak RSS is this listing's alone: a fake lister hands the
# folder layout a million listed names (as list_tree would), one in 1000 not an image, one in
# 5000 a dangling link, one class folder of unknown name; the child checks every key and
# reports the driver's memory before and at its peak.
MILLION_KEYS = r"""
import collections, json, sys
import psutil
from fer_ray import storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets import folder

n = int(sys.argv[1])
classes = ("happy", "sad", "angry", "surprised", "whatever")

def entry(i):
    uri = f"s3://bucket/affectnet/{classes[i % 5]}/{i:07d}." + ("txt" if i % 1000 == 7 else "jpg")
    if i % 5000 == 11:
        return storage.Listed(uri, problem="dangling_link", error="link to nowhere")
    return storage.Listed(uri, 1000 + i % 7, 1_700_000_000_000_000_000 + i)

entries = [entry(i) for i in range(n)]
before = psutil.Process().memory_info().rss
table = folder.list_inputs(PreprocessConfig(layout="folder", input="s3://bucket/affectnet", output="/tmp/o"),
                           lambda uri: entries)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (pytest's own)
peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024
uris = table["source_uri"].to_pylist()
print(json.dumps({
    "rows": table.num_rows, "same_keys": uris == [e.uri for e in entries],
    "status": collections.Counter(table["status"].to_pylist()),
    "split": collections.Counter(table["split"].to_pylist()),
    "table_bytes": table.nbytes, "before": before, "peak": peak}))
"""


def test_a_million_listed_keys_become_a_million_rows_in_bounded_memory():
    done = subprocess.run([sys.executable, "-c", MILLION_KEYS, str(MILLION)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["rows"] == MILLION and got["same_keys"]  # each key once, in listing order
    # the .txt names are all in "angry" (i % 5 == 2), the links in "sad": none in "whatever"
    not_images, dangling, unknown = MILLION // 1000, MILLION // 5000, MILLION // 5
    assert got["status"] == {"": MILLION - not_images - dangling - unknown, "unknown_class": unknown,
                             "unsupported_format": not_images, "dangling_link": dangling}
    assert got["split"][""] == dangling + not_images  # names that are not inputs get no split
    assert set(got["split"]) == {"", "train", "val", "test"}
    # The old code's row dicts peaked at about 1.7 kB per key; the table takes under 200 bytes
    # (a fifth of the rows carry a 300-byte error text), and building it costs about 350.
    assert got["table_bytes"] < 200 * MILLION
    assert got["peak"] - got["before"] < 500 * MILLION, got


def test_the_column_split_equals_the_row_split():
    """Rows with and without subjects, and names that are not inputs: the same split either way."""
    rows = [input_row(f"s3://b/{i}.jpg", "x", subject=f"s{i % 37}" if i % 3 else "") for i in range(3000)]
    rows += [input_row(f"s3://b/{i}.txt", "x", status="unsupported_format") for i in range(50)]
    for cfg in (SplitConfig(), SplitConfig(seed=7, val=0.3, test=0.2)):
        expected = [row["split"] for row in with_splits([dict(row) for row in rows], cfg, "s3://b")]
        table = schema.rows_table(rows, schema.INPUT_ROWS, 512)
        assert with_split_column(table, cfg, "s3://b")["split"].to_pylist() == expected
    no_subjects = [row for row in rows if not row["subject"]]
    expected = [row["split"] for row in with_splits([dict(row) for row in no_subjects], SplitConfig(), "s3://b")]
    table = schema.rows_table(no_subjects, schema.INPUT_ROWS)
    assert with_split_column(table, SplitConfig(), "s3://b")["split"].to_pylist() == expected


def test_a_file_keeps_its_split_wherever_the_dataset_is_stored():
    """Files without a subject split by their name below the input: the same tree in a bucket,
    under another prefix or copied to a local disk gives each file the same split, row by row
    and column by column. A name outside the input (never listed so) keeps its whole URI."""
    names = [f"{label}/img {i}.jpg" for i in range(400) for label in ("happy", "sad")]
    splits = []
    for root in ("s3://lab/affect", "s3://other-bucket/copy/affect/", "/mnt/data/affect"):
        rows = [input_row(storage.join(root, name), "folder") for name in names]
        by_row = [row["split"] for row in with_splits([dict(row) for row in rows], SplitConfig(), root)]
        by_column = with_split_column(schema.rows_table(rows, schema.INPUT_ROWS), SplitConfig(), root)
        assert by_column["split"].to_pylist() == by_row
        splits.append(by_row)
    assert splits[0] == splits[1] == splits[2] and {"train", "val", "test"} == set(splits[0])
    outside = [input_row("s3://elsewhere/happy/img 0.jpg", "folder"), input_row("s3://lab/affect/x.jpg", "folder")]
    by_row = with_splits([dict(row) for row in outside], SplitConfig(), "s3://lab/affect")
    by_column = with_split_column(schema.rows_table(outside, schema.INPUT_ROWS), SplitConfig(), "s3://lab/affect")
    assert by_column["split"].to_pylist() == [row["split"] for row in by_row]


def test_the_folder_table_holds_the_rows_of_the_row_by_row_code():
    entries = [storage.Listed(f"/data/{name}/{i}.{ext}", i, i) for i, (name, ext) in
               enumerate([("happy", "jpg"), ("misc", "png"), ("sad", "txt"), ("fear", "JPEG")] * 50)]
    entries.append(storage.Listed("/data/sad/gone.jpg", problem="dangling_link", error="nowhere"))
    cfg = PreprocessConfig(layout="folder", input="/data", output="/out")
    expected = with_splits(listed_rows(entries, "folder", folder.image_row), cfg.split, cfg.input)
    got = folder.list_inputs(cfg, lambda uri: entries).to_pylist()
    assert {row["status"] for row in got} == {"", "unknown_class", "unsupported_format", "dangling_link"}
    assert [plain(row) for row in got] == [plain(row) for row in expected]


def plain(row: dict) -> dict:
    """A row to compare: NaN valence/arousal left out, landmarks as a list either way."""
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in row.items()
            if k not in ("valence", "arousal")}


def test_each_read_task_carries_its_own_rows_only():
    rows = schema.rows_table((input_row(f"s3://bucket/{i:06d}.jpg", "folder") for i in range(20_000)),
                             schema.INPUT_ROWS)
    tasks = RowsDatasource(rows, rows_per_task=256).get_read_tasks(1)
    assert sum(task.metadata.num_rows for task in tasks) == 20_000 and len(tasks) == 79
    whole = len(pickle.dumps(rows))
    assert max(len(pickle.dumps(task.read_fn()[0])) for task in tasks) < whole / 20
    read = pa.concat_tables([table for task in tasks for table in task.read_fn()])
    assert read["source_uri"].to_pylist() == rows["source_uri"].to_pylist()
