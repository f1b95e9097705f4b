"""Listing many inputs on the real S3 test server: the parallel listing over sub-prefixes
names exactly what one sequential recursive listing names (top-level keys, empty and nested
sub-prefixes included), rides out an outage as every storage call does, and a run over many
inputs writes its manifest as several Parquet shards, never one file."""
from __future__ import annotations

import logging
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from fer_ray import results, s3_listing, storage
from fer_ray.config import RetryConfig
from fer_ray.datasets import RowsDatasource
from fer_ray.storage import StorageUnavailable
from tests.integration.helpers import read_output, run_preprocess

pytestmark = pytest.mark.integration

PATIENT = RetryConfig(storage_attempts=9, storage_backoff_s=0.25, storage_max_backoff_s=1.0)
IMPATIENT = RetryConfig(storage_attempts=2, storage_backoff_s=0.1, storage_max_backoff_s=0.1)


def object_keys() -> list[str]:
    """2,000 keys: at the top level, in ten class prefixes with nested levels, and one chain
    deeper than the levels the listing splits at."""
    keys = [f"top_{i}.jpg" for i in range(7)]
    keys += [f"class_{c}/{i:04d}.jpg" for c in range(10) for i in range(120)]
    keys += [f"class_{c}/take_{t}/frame_{i}.png" for c in range(10) for t in range(4) for i in range(19)]
    keys += [f"a/b/c/d/e/f/{i}.jpg" for i in range(2000 - len(keys))]
    return keys


def upload(s3_server, prefix: str, keys: list[str]) -> None:
    """Objects put in parallel (boto3: one request per object, half pyarrow's)."""
    import boto3

    name, root = storage.resolve(prefix)[1].split("/", 1)
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing-secret")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=name, Key=f"{root}/{key}", Body=key.encode()), keys))


@pytest.fixture(scope="module")
def listed_prefix(s3_server, bucket) -> str:
    """object_keys(), plus empty sub-prefixes (directory markers)."""
    prefix = f"{bucket}/listing/many"
    upload(s3_server, prefix, object_keys())
    fs, path = storage.resolve(prefix)
    for empty in ("empty_top", "class_3/empty", "a/b/also_empty"):
        fs.create_dir(f"{path}/{empty}")
    return prefix


@pytest.fixture(scope="module")
def flat_prefix(s3_server, bucket) -> str:
    """AffectNet's `train_set/images/` in small: 1,500 numbered names on one level (no
    sub-prefix to list side by side), a few odd ones, and a sub-prefix beside them."""
    prefix = f"{bucket}/listing/flat"
    names = [f"images/{i}.jpg" for i in range(1500)] + ["images/a b.jpg", "images/é.jpg", "images/~.jpg"]
    upload(s3_server, prefix, names + ["annotations/0_exp.npy"])
    return prefix


def sequential(uri: str) -> list[tuple[str, int, int]]:
    """What one recursive listing names: today's reference."""
    fs, path = storage.resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted((f"s3://{i.path}", i.size, i.mtime_ns) for i in infos if i.type == pafs.FileType.File)


def as_tuples(entries: list[storage.Listed]) -> list[tuple[str, int, int]]:
    return [(e.uri, e.size, e.mtime_ns) for e in entries]


@pytest.mark.parametrize("threads", [storage.LIST_THREADS, 2, 64])
def test_the_parallel_listing_names_what_a_sequential_one_names(listed_prefix, monkeypatch, threads):
    """More threads than sub-prefixes lists deeper levels one by one; fewer stops at the top."""
    monkeypatch.setattr(storage, "LIST_THREADS", threads)
    entries = storage.list_tree(listed_prefix)
    expected = sequential(listed_prefix)
    assert len(expected) == 2000 and as_tuples(entries) == expected
    assert not any(e.uri.endswith("empty") or e.problem for e in entries)  # markers are no files
    assert f"{listed_prefix}/top_0.jpg" in {e.uri for e in entries}


def test_a_flat_prefix_is_cut_into_key_ranges_listed_side_by_side(flat_prefix, monkeypatch, caplog):
    """Pages of 40 keys (S3's are 1000), so that 1,500 keys take the cuts 37,500 would."""
    monkeypatch.setattr(s3_listing, "PAGE_KEYS", 40)
    with caplog.at_level(logging.DEBUG, logger="fer_ray.storage"):
        entries = storage.list_tree(f"{flat_prefix}/images")
    assert as_tuples(entries) == sequential(f"{flat_prefix}/images") and len(entries) == 1503
    stats = re.search(r"(\d+) pages over (\d+) key ranges, at most (\d+) requests pending at once", caplog.text)
    pages, ranges, at_once = map(int, stats.groups())
    print(f"1,503 flat keys in pages of 40: {pages} pages over {ranges} ranges, {at_once} at once")
    assert ranges > 1 and at_once > 1 and pages < 2 * 1503 / 40


def test_a_missing_prefix_is_not_found_and_a_file_prefix_lists_its_own_keys(listed_prefix):
    with pytest.raises(FileNotFoundError):
        storage.list_tree(f"{listed_prefix}/no_such_prefix")
    assert as_tuples(storage.list_tree(f"{listed_prefix}/class_4/take_2")) == sequential(
        f"{listed_prefix}/class_4/take_2")


def test_a_listing_rides_out_an_outage_and_one_past_the_retries_stops(s3_server, listed_prefix):
    expected = sequential(listed_prefix)
    restarted = s3_server.outage(2.0)  # every first request of the listing meets a closed port
    entries = storage.list_tree(listed_prefix, PATIENT)
    restarted.join()
    assert as_tuples(entries) == expected
    s3_server.stop()
    try:
        with pytest.raises(StorageUnavailable, match="list s3://.*storage still unreachable after 2 attempts"):
            storage.list_tree(listed_prefix, IMPATIENT)
    finally:
        s3_server.start()


@pytest.fixture(scope="module")
def many_names(tmp_path_factory, ray_cluster) -> str:
    """A folder-layout tree of 3 real faces and 1,000 names that are not images (cheap inputs:
    each still gets its manifest row)."""
    from fer_ray.sample_data import write_sample_data

    sample = tmp_path_factory.mktemp("many-sample")
    write_sample_data(str(sample), layouts=("folder",))
    root = tmp_path_factory.mktemp("many-names")
    images = sorted(os.path.join(d, f) for d, _, files in os.walk(sample / "folder") for f in files)[:3]
    (root / "happy").mkdir()
    for i, image in enumerate(images):
        shutil.copy(image, root / "happy" / f"face_{i}{os.path.splitext(image)[1]}")
    for i in range(1000):
        (root / "happy" / f"note_{i:03d}.txt").write_bytes(b"")
    return str(root)


def test_a_run_over_many_inputs_writes_its_manifest_in_shards(many_names, tmp_path):
    output = str(tmp_path / "out")
    summary = run_preprocess("folder", many_names, output, rows_per_file=32)
    assert summary["inputs"] == 1003 and summary["status"]["unsupported_format"] == 1000
    shards = results.read_commit(output).files["manifest"]
    # A write task takes blocks until it has rows_per_file rows; a block is at most a read
    # task's rows (RowsDatasource: 256), so a file holds fewer than 256 + 32 rows.
    per_shard = [pq.read_metadata(storage.join(output, shard)).num_rows for shard in shards]
    assert len(shards) >= 4 and sum(per_shard) == 1003 and max(per_shard) < RowsDatasource.ROWS_PER_TASK + 32
    manifest = read_output(output, "manifest")
    assert manifest.num_rows == len(set(manifest["source_uri"].to_pylist())) == 1003
