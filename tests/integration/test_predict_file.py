"""Predictions into one file (parquet or csv): written beside the target and moved over it only
when the file accounts for every input; otherwise the previous file stays as it was."""
from __future__ import annotations

import pyarrow.csv as pacsv
import pytest
import ray.data

from fer_ray.pipelines import runs
from fer_ray.pipelines.predict import write_file


def prediction_rows(uris: list[str]) -> ray.data.Dataset:
    return ray.data.from_items([{"source_uri": uri, "status": "ok", "is_manifest": True, "label": "happy"}
                                for uri in uris])


def test_a_file_missing_inputs_is_never_moved_over_the_previous_one(ray_cluster, tmp_path):
    output = tmp_path / "labels.csv"
    counts = write_file(prediction_rows(["a.jpg", "b.jpg"]), str(output), "csv", expected_inputs=2)
    assert counts["inputs"] == 2 and pacsv.read_csv(output).num_rows == 2
    before = output.read_bytes()

    with pytest.raises(runs.RunError, match=r"predict: 1 of 2 inputs are accounted for; .*labels.csv was not written"):
        write_file(prediction_rows(["c.jpg"]), str(output), "csv", expected_inputs=2)
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]  # no staging file left
