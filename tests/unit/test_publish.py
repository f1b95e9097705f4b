"""Publishing a result (results.publish) when storage refuses to delete what it supersedes:
the marker is written, so the new run is the result and the job must not fail for it."""
from __future__ import annotations

import subprocess

import pyarrow as pa
import pytest

from fer_ray import results, storage


def test_storage_refusing_to_delete_a_superseded_run_leaves_the_new_one_published(tmp_path, capsys):
    output = str(tmp_path / "out")
    first = results.commit_tables(output, "preprocess", {"faces": [pa.table({"x": [1]})]})
    undeletable = next((tmp_path / "out" / results.RUNS_DIR / first.run).rglob("*.parquet"))
    if subprocess.run(["chattr", "+i", str(undeletable)], capture_output=True).returncode != 0:
        pytest.skip("no undeletable file here (chattr +i is not permitted)")
    try:
        second = results.commit_tables(output, "preprocess", {"faces": [pa.table({"x": [2]})]})  # must not raise
    finally:
        subprocess.run(["chattr", "-i", str(undeletable)], check=True)
    said = capsys.readouterr().err
    assert f"run {second.run} is published, but storage failed" in said, said
    assert results.read_commit(output).run == second.run
    assert results.read_table(output, "faces")["x"].to_pylist() == [2]
    runs_dir = storage.join(output, results.RUNS_DIR)
    assert first.run in storage.list_dirs(runs_dir)  # left for the next publish
    third = results.commit_tables(output, "preprocess", {"faces": [pa.table({"x": [3]})]})
    assert storage.list_dirs(runs_dir) == [third.run]
