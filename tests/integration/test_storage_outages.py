"""Storage outages: the S3 test server is stopped and started again on the same port while
fer-ray reads and writes through pyarrow, as on AWS. A passing outage costs nothing; one
that outlasts the retries stops the run (resumable), and no input is blamed for it.

The stage-level tests call the stages themselves (no Ray) so the outage falls exactly
where it should: mid-read, mid-stream, mid-write."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fer_ray import storage
from fer_ray.config import PreprocessConfig, RetryConfig
from fer_ray.storage import StorageUnavailable

pytestmark = pytest.mark.integration

# Waits of 0.25, 0.5, 1, 1, ... s: about 6 s of retries, enough for a 3 s outage.
PATIENT = RetryConfig(storage_attempts=9, storage_backoff_s=0.25, storage_max_backoff_s=1.0)
IMPATIENT = RetryConfig(storage_attempts=2, storage_backoff_s=0.1, storage_max_backoff_s=0.1)


@pytest.fixture(scope="module")
def objects(bucket):
    """Twelve small objects under one prefix, and their bytes."""
    prefix = f"{bucket}/outage/objects"
    data = {storage.join(prefix, f"{i:02d}.jpg"): bytes([i]) * (1000 + i) for i in range(12)}
    for uri, payload in data.items():
        storage.write_bytes(uri, payload)
    return data


def fetch_rows(uris) -> dict:
    from fer_ray.datasets.common import input_row

    return {name: [input_row(uri, "folder")[name] for uri in uris]
            for name in input_row("", "folder")}


def test_reads_during_an_outage_are_retried_not_blamed_on_inputs(s3_server, objects):
    from fer_ray.stages.base import batch_rows
    from fer_ray.stages.fetch import FetchStage

    stage = FetchStage(PreprocessConfig(layout="folder", input="s3://x", output="s3://y", retry=PATIENT))
    missing = next(iter(objects)).replace("00.jpg", "missing.jpg")
    restarted = s3_server.outage(3.0)
    rows = batch_rows(stage(fetch_rows([*objects, missing])))
    restarted.join()
    got = {row["source_uri"]: row for row in rows}
    assert all(got[uri]["data"] == payload and got[uri]["status"] == "" for uri, payload in objects.items())
    # an error about the object itself is the input's own, and is not waited on
    assert got[missing]["status"] == "read_error" and "FileNotFoundError" in got[missing]["error"]


def test_an_outage_longer_than_the_retries_stops_the_stage(s3_server, objects):
    from fer_ray.stages.fetch import FetchStage

    stage = FetchStage(PreprocessConfig(layout="folder", input="s3://x", output="s3://y", retry=IMPATIENT))
    restarted = s3_server.outage(8.0)  # pyarrow's own short retries inside each try last ~1-2 s
    try:
        with pytest.raises(StorageUnavailable, match="storage still unreachable after 2 attempts"):
            stage(fetch_rows(list(objects)[:2]))
    finally:
        restarted.join()


def test_a_csv_stream_continues_where_an_outage_cut_it(s3_server, bucket):
    from fer_ray.datasets.fer2013 import read_blocks
    from fer_ray.sample_data import write_sample_data

    write_sample_data(f"{bucket}/outage/raw", layouts=("fer2013",), scale=2)
    csv = f"{bucket}/outage/raw/fer2013/fer2013.csv"
    whole = list(read_blocks(csv, 0, 16))
    blocks = read_blocks(csv, 0, 16, retry=PATIENT)
    interrupted = [next(blocks)]
    restarted = s3_server.outage(3.0)  # the stream's next chunks are read during the outage
    interrupted += list(blocks)
    restarted.join()
    assert len(whole) > 2 and len(interrupted) == len(whole)
    # pandas compares the NaN valence/arousal columns as equal
    assert pa.concat_tables(interrupted).to_pandas().equals(pa.concat_tables(whole).to_pandas())


def test_writes_during_an_outage_are_retried(s3_server, bucket):
    from fer_ray.pipelines.writer import ShardSink

    sink = ShardSink(f"{bucket}/outage/run", face_bytes=100, retry=PATIENT)
    table = pa.table({"x": list(range(100))})
    restarted = s3_server.outage(3.0)
    sink.write_table(table, "faces/part.parquet")
    restarted.join()
    fs, path = storage.resolve(f"{bucket}/outage/run/faces/part.parquet")
    assert pq.read_table(path, filesystem=fs).equals(table)
