"""Every layout end to end: sample data on the S3 test server -> preprocess on Ray -> read back."""
from __future__ import annotations

import io

import boto3
import numpy as np
import pytest
from PIL import Image

from fer_ray import schema, storage
from fer_ray.config import IMAGE_LAYOUTS
from fer_ray.pipelines.demo import sample_input
from tests.integration.helpers import read_output, run_preprocess

pytestmark = pytest.mark.integration
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@pytest.fixture(scope="module")
def sample_s3(bucket, ray_cluster):
    from fer_ray.sample_data import write_sample_data

    uri = f"{bucket}/raw"
    write_sample_data(uri)
    return uri


def count_inputs(s3_server, input_uri: str) -> int:
    """Inputs counted straight from the bucket with boto3, independently of our readers."""
    bucket, _, prefix = input_uri[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    if prefix.endswith(".csv"):
        body = client.get_object(Bucket=bucket, Key=prefix)["Body"].read()
        return len(body.decode().strip().splitlines()) - 1
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sum(k.lower().endswith(IMAGE_SUFFIXES) for k in keys)


@pytest.mark.parametrize("layout", IMAGE_LAYOUTS)  # video layouts: test_clips_ingest.py
def test_layout_from_s3_end_to_end(layout, sample_s3, bucket, s3_server):
    input_uri = sample_input(sample_s3, layout)
    output = f"{bucket}/out/{layout}"
    summary = run_preprocess(layout, input_uri, output)

    manifest = read_output(output, "manifest")
    faces = read_output(output, "faces")
    assert manifest.schema.equals(schema.MANIFEST) and faces.schema.equals(schema.FACES)
    assert manifest.num_rows == count_inputs(s3_server, input_uri) == summary["inputs"]
    assert len(set(manifest["source_uri"].to_pylist())) == manifest.num_rows
    assert faces.num_rows == sum(manifest["n_faces"].to_pylist()) == summary["faces"]
    assert len(set(faces["sample_id"].to_pylist())) == faces.num_rows

    statuses = manifest["status"].to_pylist()
    usable = [s for s in statuses if s not in ("skipped", "unknown_class")]
    assert statuses.count("ok") >= 0.8 * len(usable), summary["status"]
    check_faces(faces.to_pylist())
    check_subject_disjoint(faces.to_pylist())
    sheet = Image.open(io.BytesIO(storage.read_bytes(summary["contact_sheet_uri"])))
    assert sheet.format == "PNG" and sheet.size[0] > 48
    for uri in storage.list_files(output):  # credentials never land in outputs
        assert s3_server.env()["AWS_SECRET_ACCESS_KEY"].encode() not in storage.read_bytes(uri)


def test_fer2013_is_read_as_a_stream_of_small_blocks(sample_s3, s3_server):
    """The CSV reaches the face actors in blocks sized for the file, in file order, as
    it is parsed: not one block of the whole file that Ray then cuts into pieces (with
    Ray's defaults the face stage waited for the whole of FER2013 to be parsed)."""
    from fer_ray import datasets
    from fer_ray.config import PreprocessConfig
    from fer_ray.datasets import fer2013
    from fer_ray.pipelines.inputs import read_inputs

    # A small file is cut into several blocks, so every face actor gets work; the
    # whole of FER2013 (35,887 rows) into blocks of the largest size.
    assert fer2013.rows_per_block(35_887 * 8_400) == fer2013.MAX_ROWS_PER_BLOCK
    assert fer2013.rows_per_block(35_887 * 8_400, limit=100) == fer2013.MIN_ROWS_PER_BLOCK
    input_uri = sample_input(sample_s3, "fer2013")
    block_rows = fer2013.rows_per_block(fer2013.file_size(input_uri))
    cfg = PreprocessConfig(layout="fer2013", input=input_uri, output="unused")
    ds = read_inputs(cfg, datasets.list_inputs(cfg))
    sizes = [len(batch["source_uri"]) for batch in ds.iter_batches(batch_size=None, batch_format="numpy")]
    assert sum(sizes) == count_inputs(s3_server, input_uri) > block_rows, sizes
    assert len(sizes) >= 2 and max(sizes) <= block_rows and min(sizes[:-1]) >= block_rows // 2, sizes


def test_missing_bucket_fails_before_any_ray_work(s3_server, capsys):
    from fer_ray import cli

    code = cli.main(["preprocess", "--layout", "jaffe", "--input", "s3://no-such-bucket/raw",
                     "--output", "s3://no-such-bucket/out"])
    assert code == 2 and "input: s3://no-such-bucket/raw" in capsys.readouterr().err


def check_faces(rows: list[dict]) -> None:
    for row in rows:
        face = schema.face_array(row["face"], row["face_shape"])
        points = schema.landmarks_array(row["landmarks"])
        assert face.shape == (48, 48) and face.std() > 5  # a real picture, not a blank
        assert 0 <= row["label"] < 8 or row["label"] == -1
        assert row["split"] in ("train", "val", "test")
        # both eyes inside the crop and level-ish: the alignment really ran
        eyes = points[36:48]
        assert (eyes >= 0).all() and (eyes < 48).all()
        left, right = points[36:42].mean(0), points[42:48].mean(0)
        assert abs(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))) < 5


def check_subject_disjoint(rows: list[dict]) -> None:
    splits_of: dict[str, set] = {}
    for row in rows:
        if row["subject"]:
            splits_of.setdefault(row["subject"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values()), splits_of
