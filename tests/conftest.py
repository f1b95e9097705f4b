"""Session-wide fixtures: one S3 test server and one Ray head node, started on first use."""
from __future__ import annotations

import os

import pytest

from tests.cluster import HeadNode, S3Server, enable_token_auth

# Ray reads its auth settings when it is first imported: set them before any test module
# (or fer_ray) imports ray.
enable_token_auth()


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server().start()
    os.environ.update(server.env())  # before Ray starts, so every Ray worker inherits it
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A real head node; the test process is connected to it as a Ray driver."""
    import ray

    head = HeadNode(num_cpus=2).start()
    try:
        ray.init(address=head.address, log_to_driver=False)
        yield head
    finally:
        ray.shutdown()
        head.stop()


@pytest.fixture(scope="session")
def bucket(s3_server):
    s3_server.create_bucket("fer-ray-test")
    return "s3://fer-ray-test"


@pytest.fixture(scope="session")
def fer_shards(bucket, ray_cluster):
    """Preprocessed FER2013-style sample faces on the S3 server (scale 4: 515 faces of
    48 subjects, subject-disjoint train/val/test): the training tests' data."""
    from fer_ray.config import PreprocessConfig
    from fer_ray.pipelines import preprocess
    from fer_ray.sample_data import write_sample_data

    write_sample_data(f"{bucket}/train-raw", scale=4, layouts=("fer2013",))
    output = f"{bucket}/train-data/fer2013"
    preprocess.run(PreprocessConfig(layout="fer2013", input=f"{bucket}/train-raw/fer2013/fer2013.csv",
                                    output=output))
    return output
