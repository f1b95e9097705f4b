"""Storage outages: the S3 test server is stopped and started again on the same port while
fer-ray reads and writes through pyarrow, as on AWS. A passing outage costs nothing; one
that outlasts the retries stops the run (resumable), and no input is blamed for it.

The stage-level tests call the stages themselves (no Ray) so the outage falls exactly
where it should: mid-read, mid-stream, mid-write."""
from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fer_ray import cli, results, storage
from fer_ray.config import PreprocessConfig, RetryConfig
from fer_ray.storage import StorageUnavailable
from tests.cluster import wait_for, without_ray_data_io_retries
from tests.integration.helpers import committed_units, read_output, run_preprocess

pytestmark = pytest.mark.integration

# Waits of 0.25, 0.5, 1, 1, ... s: about 6 s of retries, enough for a 3 s outage.
PATIENT = RetryConfig(storage_attempts=9, storage_backoff_s=0.25, storage_max_backoff_s=1.0)
IMPATIENT = RetryConfig(storage_attempts=2, storage_backoff_s=0.1, storage_max_backoff_s=0.1)
IMPATIENT_FLAGS = cli.flags(vars(IMPATIENT))  # the same, as the CLI takes it


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
    from fer_ray.stages.fetch import FetchStage

    stage = FetchStage(PreprocessConfig(layout="folder", input="s3://x", output="s3://y", retry=PATIENT))
    missing = next(iter(objects)).replace("00.jpg", "missing.jpg")
    restarted = s3_server.outage(3.0)
    rows = stage(fetch_rows([*objects, missing])).to_pylist()
    restarted.join()
    got = {row["source_uri"]: row for row in rows}
    assert all(got[uri]["data"] == payload and got[uri]["status"] == "" for uri, payload in objects.items())
    # an error about the object itself is the input's own, and is not waited on
    assert got[missing]["status"] == "read_error" and "FileNotFoundError" in got[missing]["error"]


def test_an_outage_longer_than_the_retries_stops_the_stage(s3_server, objects):
    from fer_ray.stages.fetch import FetchStage

    stage = FetchStage(PreprocessConfig(layout="folder", input="s3://x", output="s3://y", retry=IMPATIENT))
    s3_server.stop()  # down until the stage gives up, however long pyarrow's own retries take
    try:
        with pytest.raises(StorageUnavailable, match="storage still unreachable after 2 attempts"):
            stage(fetch_rows(list(objects)[:2]))
    finally:
        s3_server.start()


@pytest.mark.parametrize("down", ["input", "output"])
def test_the_checks_before_a_run_retry_as_the_run_is_configured_to(s3_server, bucket, down):
    """With storage down before the run, the input or output check gives up after the run's own
    retry budget (2 attempts here, not the default 8 over about 35 s) and names the field."""
    from fer_ray.config import ConfigError
    from fer_ray.pipelines.runs import check_input_output

    local = "/tmp"  # the side that is not on the stopped server
    source, target = (f"{bucket}/down/in", local) if down == "input" else (local, f"{bucket}/down/out")
    s3_server.stop()
    try:
        with pytest.raises(ConfigError, match=f"^{down}: .*storage still unreachable after 2 attempts"):
            check_input_output(source, target, IMPATIENT)
    finally:
        s3_server.start()


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


# ---------------------------------------------------------------- whole runs on Ray

@pytest.fixture(scope="module")
def s3_jaffe(bucket, ray_cluster):
    from fer_ray.sample_data import write_sample_data

    write_sample_data(f"{bucket}/outage-runs/raw", layouts=("jaffe",))
    return f"{bucket}/outage-runs/raw/jaffe"



def in_thread(function, *args, **kwargs):
    """Run function in a thread; returns (thread, outcome dict that gets 'value' or 'error')."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_a_run_rides_out_an_outage_mid_run(s3_server, s3_jaffe, bucket):
    output = f"{bucket}/outage-runs/passing"
    # one face actor (the bottleneck): most of the run still comes after the first commit
    thread, outcome = in_thread(run_preprocess, "jaffe", s3_jaffe, output, rows_per_file=16, workers=1)
    wait_for(lambda: committed_units(output) >= 1 or not thread.is_alive(), 300, "a committed unit")
    assert thread.is_alive()
    s3_server.outage(4.0).join()  # files, counts and Ray's own checkpoints are being written
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["value"]
    assert summary["inputs"] == 177 and summary["status"] == {"ok": 177}  # nothing lost, nothing blamed
    manifest = read_output(output, "manifest")
    assert manifest.num_rows == len(set(manifest["source_uri"].to_pylist())) == 177


def test_an_outage_past_the_retries_fails_the_run_and_the_rerun_resumes(s3_server, s3_jaffe, bucket, capsys):
    output = f"{bucket}/outage-runs/failing"
    run_preprocess("jaffe", s3_jaffe, output, limit=24)
    before = storage.read_bytes(storage.join(output, "_commit.json"))
    capsys.readouterr()
    with without_ray_data_io_retries():
        thread, outcome = in_thread(cli.main, ["preprocess", "--layout", "jaffe", "--input", s3_jaffe, "--output",
                                               output, "--rows-per-file", "16", "--workers", "1", *IMPATIENT_FLAGS])
        wait_for(lambda: committed_units(output) >= 1 or not thread.is_alive(), 300, "a committed unit")
        assert thread.is_alive()
        # The storage stays down until the run gives up: a fixed-length outage could fall while the
        # run computes faces without touching storage, and it would then end 0 (seen on a slow machine).
        s3_server.stop()
        try:
            thread.join(timeout=300)
        finally:
            s3_server.start()
    assert not thread.is_alive(), "the run waited on storage forever"
    err = capsys.readouterr().err.strip().splitlines()
    assert outcome.get("value") == 1, outcome
    # one line saying so, whether our retries gave up or the outage hit Ray Data's own
    # checkpoint I/O first (which depends on where the outage falls)
    assert err[-1].startswith(f"fer-ray preprocess: failed: {cli.STORAGE_DOWN}; last error: "), err[-1]
    # the previous result is untouched, and still what readers get
    assert storage.read_bytes(storage.join(output, "_commit.json")) == before
    assert read_output(output, "manifest").num_rows == 24
    resumed = run_preprocess("jaffe", s3_jaffe, output, rows_per_file=16)
    assert resumed["run_state"] == "resumed" and resumed["units_skipped"] > 0
    assert resumed["inputs"] == read_output(output, "manifest").num_rows == 177


def test_a_committed_file_read_rides_out_an_outage(s3_server, bucket):
    """The read tasks of committed Parquet (training, tuning, synthesis) retry a passing outage."""
    uri = f"{bucket}/outage/committed/part-0.parquet"
    table = pa.table({"split": ["train", "test", "train"], "label": [1, 2, 3]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue().to_pybytes())
    read = results.CommittedFiles([uri], ["label"], where=pc.field("split") == "train").get_read_tasks(1)[0]
    restarted = s3_server.outage(3.0)
    blocks = list(read())
    restarted.join()
    assert pa.concat_tables(blocks).to_pydict() == {"label": [1, 3]}


def test_an_outage_right_after_the_commit_leaves_the_run_published(s3_server, s3_jaffe, bucket, monkeypatch,
                                                                  capsys):
    """The marker is written, then storage goes down while the superseded run is removed:
    the job exits 0 with the new run as the result, and the next run removes what was left."""
    output = f"{bucket}/outage-runs/published"
    first = run_preprocess("jaffe", s3_jaffe, output, limit=12)
    write_bytes = storage.write_bytes

    def down_once_the_marker_is_written(uri, data, retry=None):
        write_bytes(uri, data, retry)
        if uri.endswith(results.COMMIT_FILE):
            # past the run's retries below (2 tries, each with pyarrow's own retries: about 4 s),
            # not past the results page's (the default retries: 35 s)
            s3_server.outage(8.0)

    monkeypatch.setattr(storage, "write_bytes", down_once_the_marker_is_written)
    capsys.readouterr()
    code = cli.main(["preprocess", "--layout", "jaffe", "--input", s3_jaffe, "--output", output, "--limit", "24",
                     *IMPATIENT_FLAGS])
    monkeypatch.undo()
    wait_for(lambda: storage.exists(storage.join(output, results.COMMIT_FILE)), 30, "the server back")
    said = capsys.readouterr().err
    assert code == 0, said
    commit = results.read_commit(output)
    assert f"run {commit.run} is published, but storage failed" in said, said
    assert commit.run != first["run"] and read_output(output, "manifest").num_rows == 24
    runs_dir = storage.join(output, results.RUNS_DIR)
    assert storage.list_dirs(runs_dir) == sorted([first["run"], commit.run])  # left for the next publish
    latest = run_preprocess("jaffe", s3_jaffe, output, limit=36)
    assert storage.list_dirs(runs_dir) == [latest["run"]]
