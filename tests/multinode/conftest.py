"""A head node and two worker nodes on this machine, started once per module."""
from __future__ import annotations

import pytest

from tests.cluster import LocalCluster


@pytest.fixture(scope="module")
def three_nodes(ray_cluster, s3_server):
    """A head of 0 CPUs (it runs the job drivers and Ray Data's bookkeeping, no stage work) and
    two worker nodes of 1 CPU each, token auth on. After the session's head node and S3 server,
    so that the nodes inherit their settings (the S3 endpoint, the weights cache)."""
    cluster = LocalCluster(workers=2, cpus=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
