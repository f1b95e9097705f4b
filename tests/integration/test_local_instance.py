"""A local Ray instance that fer-ray starts while another one runs on the machine (here the
session's head node): Ray code in its workers must still reach its own dashboard."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

WORKER_STATE_API = textwrap.dedent("""
    import os, ray
    from fer_ray import runtime
    runtime.start_ray()

    @ray.remote
    def state_api(told: bool):
        from ray.util.state import list_actors
        if not told:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        try:
            return len(list_actors()) >= 0
        except Exception as err:
            return f"{type(err).__name__}: {err}"

    print(ray.get(state_api.remote(True)))
    print(ray.get(state_api.remote(False)))  # last: it unsets the variable in its worker process
""")


def test_workers_of_a_local_instance_reach_its_dashboard_beside_another_instance(ray_cluster, tmp_path):
    # RAY_ADDRESS=local: start an instance rather than join the session's (ray_current_cluster)
    env = {**os.environ, "RAY_ADDRESS": "local", "FER_RAY_LOG_DIR": str(tmp_path)}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", WORKER_STATE_API], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    told, untold = done.stdout.splitlines()[-2:]
    # Ray's own lookup of "the" instance fails with two on the machine (what killed Ray
    # Train's placement-group cleaner and hung sweeps); the address fer-ray gives works
    assert "multiple active Ray instances" in untold
    assert told == "True"
