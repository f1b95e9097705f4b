"""The ports the test clusters are started on: each one given out once. Sequential probes of
port 0 can get the same port back, and a `ray start` handed one port for two of its
components refuses to start (a node replacement in the several-node tests failed so)."""

from tests.cluster import free_port


def test_free_ports_are_never_given_out_twice():
    ports = [free_port() for _ in range(500)]  # 500 plain probes here repeated ~10 ports
    assert len(set(ports)) == len(ports)
