"""Joining Ray: a local instance that fer-ray starts while another one runs on the machine (here
the session's head node), whose workers must still reach their own dashboard, and which a data
command starts without one; and a RAY_ADDRESS where nothing answers, or a cluster that refuses
the token, failing in seconds, naming the variable, before any output is written."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

WORKER_STATE_API = textwrap.dedent("""
    import os, ray
    from fer_ray import runtime

    @ray.remote
    def state_api(told: bool):
        from ray.util.state import list_actors
        if not told:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        try:
            return len(list_actors()) >= 0
        except Exception as err:
            return f"{type(err).__name__}: {err}"

    with runtime.ray_of_one_command():  # as the CLI runs a command
        runtime.start_ray()
        print(ray.get(state_api.remote(True)))
        print(ray.get(state_api.remote(False)))  # last: it unsets the variable in its worker process
    print(ray.is_initialized())
""")


def test_workers_of_a_local_instance_reach_its_dashboard_beside_another_instance(ray_cluster, tmp_path):
    # RAY_ADDRESS=local: start an instance rather than join the session's (ray_current_cluster)
    env = {**os.environ, "RAY_ADDRESS": "local", "FER_RAY_LOG_DIR": str(tmp_path)}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", WORKER_STATE_API], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    told, untold, up_after = done.stdout.splitlines()[-3:]
    # Ray's own lookup of "the" instance fails with two on the machine (what killed Ray
    # Train's placement-group cleaner and hung sweeps); the address fer-ray gives works
    assert "multiple active Ray instances" in untold
    assert told == "True"
    # the instance the command started ends with it (Ray's last relayed lines go to its log)
    assert up_after == "False"


def test_a_ray_up_before_a_command_stays_up_after_it(ray_cluster):
    import ray

    from fer_ray import runtime

    with runtime.ray_of_one_command():
        runtime.start_ray()
    assert ray.is_initialized()


def preprocess_joining(tmp_path, timeout: int = 120, **env) -> subprocess.CompletedProcess:
    """`fer-ray preprocess` of the JAFFE sample with these environment changes; a join that hangs
    fails by the timeout (Ray alone retried a silent address for minutes)."""
    from fer_ray.sample_data import write_sample_data

    raw = write_sample_data(str(tmp_path / "raw"), layouts=("jaffe",))["jaffe"]["uri"]
    command = [sys.executable, "-m", "fer_ray.cli", "preprocess", "--layout", "jaffe", "--input", raw,
               "--output", str(tmp_path / "out")]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "FER_RAY_LOG_DIR": str(tmp_path), **env})


def test_a_data_command_starts_its_local_instance_without_a_dashboard(ray_cluster, tmp_path):
    done = preprocess_joining(tmp_path, timeout=300, RAY_ADDRESS="local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "_commit.json").exists()
    ray_output = "".join(log.read_text() for log in tmp_path.glob("preprocess-*.log"))
    assert "Started a local Ray instance." in ray_output  # Ray's own line, in the run log
    assert "View the dashboard" not in ray_output


def test_an_address_where_no_cluster_answers_fails_naming_ray_address(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        silent = f"127.0.0.1:{closed.getsockname()[1]}"
    for address in (silent, f"ray://{silent}", "http://127.0.0.1:8265"):
        done = preprocess_joining(tmp_path, RAY_ADDRESS=address)
        assert done.returncode == 2, done.stderr[-3000:]
        assert done.stderr.splitlines()[-1].startswith(
            f"fer-ray: configuration error: RAY_ADDRESS: no Ray cluster answers at '{address}'"), done.stderr
        assert not (tmp_path / "out").exists()


def test_a_cluster_that_refuses_the_token_fails_naming_the_token(ray_cluster, tmp_path):
    done = preprocess_joining(tmp_path, RAY_ADDRESS=ray_cluster.address, RAY_AUTH_TOKEN="0" * 64)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith("fer-ray: configuration error: RAY_AUTH_TOKEN: the Ray cluster at "), last
    assert "0" * 64 not in done.stderr + done.stdout  # the token itself is never printed
    assert not (tmp_path / "out").exists()
