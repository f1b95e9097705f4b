"""A video dataset into clips on Ray, S3 in and out: the BAUM-2-style sample archive with bad
inputs (tests/conftest.py's `baum2_clips`), read back with plain pyarrow."""
from __future__ import annotations

import io
from collections import Counter

import boto3
import numpy as np
import pytest
from PIL import Image

from fer_ray import schema, storage
from fer_ray.config import PreprocessConfig, SplitConfig
from fer_ray.pipelines import preprocess
from fer_ray.sample_videos import BAUM2_BROKEN, BAUM2_UNLABELLED, baum2_clips
from tests.conftest import BAUM2_BAD_INPUTS
from tests.integration.helpers import read_output

pytestmark = pytest.mark.integration


def listed_keys(s3_server, prefix_uri: str) -> list[str]:
    """The keys under a prefix, straight from the bucket with boto3 (independent of our lister)."""
    bucket, _, prefix = prefix_uri[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    keys = [obj["Key"][len(prefix) + 1:] for page in pages for obj in page.get("Contents", [])]
    return [key for key in keys if not key.endswith("/")]  # directory markers pyarrow leaves are no files


@pytest.fixture(scope="module")
def outputs(baum2_clips):
    output, summary = baum2_clips
    manifest = read_output(output, "manifest").to_pylist()
    return output, summary, {row["source_uri"].rsplit("/baum2/", 1)[1]: row for row in manifest}, \
        read_output(output, "clips")


def test_every_listed_name_has_one_manifest_row_with_its_status(outputs, s3_server):
    output, summary, manifest, _ = outputs
    raw = summary["input"]
    keys = listed_keys(s3_server, raw)
    clip_names = [k for k in keys if "/avi/" in k]
    labels_of_clips = {k.replace("/avi/", "/emotion/").rsplit(".", 1)[0] + ".txt" for k in clip_names}
    orphans = [k for k in keys if "/emotion/" in k and k not in labels_of_clips]
    expected = {*clip_names, *orphans, "readme.txt", "S099/"}
    assert set(manifest) == expected and summary["inputs"] == len(expected)
    status = {name: row["status"] for name, row in manifest.items()}
    assert status[BAUM2_BROKEN] == "not_a_video" and status[BAUM2_UNLABELLED] == "missing_annotation"
    assert status["S002/avi/090.avi"] == status["S004/avi/091.avi"] == "bad_label"
    assert "empty" in manifest["S002/avi/090.avi"]["error"] and "outside" in manifest["S004/avi/091.avi"]["error"]
    assert status["S006/avi/092.avi"] == "empty_file" and status["S099/"] == "no_videos"
    assert status["S099/emotion/001.txt"] == "skipped" and status["readme.txt"] == "unsupported_format"
    assert set(BAUM2_BAD_INPUTS) <= set(manifest) | {"S099/emotion/001.txt"}
    good = len(baum2_clips()) - 1  # every sample clip but the unlabelled one
    assert Counter(status.values())["ok"] + Counter(status.values())["too_few_valid"] == good
    assert Counter(status.values())["ok"] >= good - 2


def test_clip_rows_have_t_frames_a_valid_mask_and_their_manifest_counts(outputs):
    _, summary, manifest, clips = outputs
    assert clips.schema.equals(schema.CLIPS)
    assert clips.num_rows == summary["clips"] == sum(row["status"] == "ok" for row in manifest.values())
    for row in clips.to_pylist():
        frames = schema.clip_array(row["frames"], row["frame_shape"])
        assert frames.shape == (16, 48, 48, 1) and row["clip_length"] == 16
        assert len(row["valid"]) == len(row["timestamps_s"]) == len(row["frame_indices"]) == 16
        assert row["n_valid"] == sum(row["valid"]) >= 8
        assert np.all(np.diff(row["timestamps_s"]) > 0) and not row["repeated"]  # 23-46 frames: no repeats
        points = np.asarray(row["landmarks"], np.float32).reshape(16, 68, 2)
        assert np.isfinite(points[row["valid"]]).all() and np.isnan(points[~np.array(row["valid"])]).all()
        assert not frames[~np.array(row["valid"])].any()  # a lost frame is blank, not dropped
        name = row["source_uri"].rsplit("/baum2/", 1)[1]
        assert manifest[name]["n_faces"] == row["n_valid"] and manifest[name]["label"] == row["label"]
    assert set(clips["label_name"].to_pylist()) == {"happy", "surprise", "sad", "anger"}


def test_splits_are_subject_disjoint_and_all_present(outputs):
    _, _, _, clips = outputs
    split_of = {}
    for row in clips.to_pylist():
        assert split_of.setdefault(row["subject"], row["split"]) == row["split"], row["subject"]
    assert Counter(split_of.values()) == {"train": 6, "val": 2, "test": 2}


def test_the_contact_sheet_shows_film_strips_and_a_rerun_is_up_to_date(outputs):
    output, summary, _, _ = outputs
    sheet = Image.open(io.BytesIO(storage.read_bytes(summary["contact_sheet_uri"])))
    assert sheet.format == "PNG" and sheet.size[0] >= 16 * 48 * 2  # a strip of 16 frames, twice enlarged
    again = preprocess.run(PreprocessConfig(layout="baum2", input=summary["input"], output=output,
                                            split=SplitConfig(train=0.6, val=0.2, test=0.2)))
    assert again["run_state"] == "up to date" and again["run"] == summary["run"]
