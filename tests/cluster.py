"""A real Ray head node (`ray start --head`) and a real S3 server (moto) for the tests.

One head node per test session serves both the integration tests (the pytest process
connects as a driver) and the job tests (`ray job submit` to its dashboard). Token
authentication is on, as Ray 2.60 does by default. Stopping kills only this head
node's processes (found by its private temp dir), never other Ray instances.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import psutil

VENV_BIN = os.path.dirname(sys.executable)


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and never given out before in this test session. A port is free again
    as soon as its probe socket closes, so the kernel can hand the same one back to the next
    call: one `ray start` once got it for two of its components and refused to start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def run_job_with_no_cluster(entrypoint: list[str], cwd: str, timeout: int = 90) -> subprocess.CompletedProcess:
    """Run a job's entrypoint as its driver would, with RAY_ADDRESS naming a port nothing
    listens on: a job that touched Ray at all would hang connecting to it (and time out), so
    the message it prints instead shows the check came before any cluster work."""
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    return subprocess.run([sys.executable, *entrypoint], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@dataclass(frozen=True)
class Served:
    """One GET the S3 server answered: the object's path (/bucket/key), the Range header
    ('' for a whole-object read) and the body bytes sent."""
    path: str
    range: str
    size: int


def counting_gets(app, served: list[Served]):
    """The WSGI app, recording each GET's path, Range header and body size in `served`."""
    def counted(environ, start_response):
        body = app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET":
            return body
        try:
            chunks = list(body)  # moto's bodies are in memory already
        finally:
            getattr(body, "close", lambda: None)()
        served.append(Served(environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE", ""), sum(map(len, chunks))))
        return chunks
    return counted


def delayed(app, server: "S3Server"):
    """The WSGI app, answering each request `server.latency_s` late (a far region, a loaded server)."""
    def answer(environ, start_response):
        if server.latency_s:
            time.sleep(server.latency_s)
        return app(environ, start_response)
    return answer


class S3Server:
    """moto in server mode on 127.0.0.1, reached over HTTP exactly like AWS. It can be
    stopped and started again on the same port (an outage): moto keeps its buckets in the
    process, so they are all there again afterwards. Stopping also cuts the connections
    clients keep alive, as a real outage would; otherwise pyarrow's pooled connections
    would go on being served through it and the outage would hit only new connections."""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.live: set[socket.socket] = set()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.served: list[Served] = []  # every GET answered, so tests can see how objects were read
        self.latency_s = 0.0  # added to every answer (slowly)

    def start(self) -> "S3Server":
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        live = self.live

        class TrackedHandler(MotoRequestHandler):
            def setup(self):
                super().setup()
                live.add(self.connection)

            def finish(self):
                live.discard(self.connection)
                super().finish()

        app = delayed(counting_gets(DomainDispatcherApplication(create_backend_app), self.served), self)
        self.server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=TrackedHandler)
        self.serving = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.serving.start()
        return self

    def outage(self, seconds: float) -> threading.Thread:
        """Stop the server now and start it again after `seconds`, from a thread (returned,
        so a test can join it)."""
        self.stop()

        def restart() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        return thread

    @contextlib.contextmanager
    def slowly(self, latency_s: float):
        """Every request answered `latency_s` late inside the block."""
        self.latency_s = latency_s
        try:
            yield
        finally:
            self.latency_s = 0.0

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing-secret").create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.serving.join()  # serve_forever has closed the listening socket
            self.server = None
        for connection in list(self.live):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its client
        self.live.clear()


class HeadNode:
    """`ray start --head` on free ports, with its own temp dir."""

    def __init__(self, num_cpus: int = 2, settings: dict[str, str] | None = None):
        self.temp_dir = tempfile.mkdtemp(prefix="ferray-")
        self.settings = settings or {}  # its worker nodes' too
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.num_cpus = num_cpus
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> "HeadNode":
        _ray_start(["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                    f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                    "--dashboard-host=127.0.0.1", "--include-dashboard=true"], self.num_cpus, self.temp_dir,
                   self.settings)
        return self

    def submit(self, entrypoint: list[str], working_dir: str, timeout: int = 600) -> subprocess.CompletedProcess:
        cmd = [f"{VENV_BIN}/ray", "job", "submit", "--address", self.dashboard,
               "--working-dir", working_dir, "--", *entrypoint]
        return subprocess.run(cmd, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        _kill(self.processes())
        time.sleep(1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def processes(self) -> set:
        """This head node's processes: those naming its temp dir or GCS port, and their children
        (agents rename themselves, and the client server names only the GCS address). Worker
        nodes joined to it name its GCS port too: stopping the head stops them as well."""
        return _processes((self.temp_dir, f":{self.gcs_port}"))


class NodeStartTimedOut(AssertionError):
    """`ray start` gave up waiting for its node to register with the GCS."""


# What `ray start` prints when its node did not register with the GCS in time (Ray waits a fixed
# 30 s): a machine too loaded to start the node then, not a wrong setting. Seen on 2 cores with
# the run queue at 10-21: "Failed to get node info: RPC error: Deadline Exceeded".
GCS_TIMEOUTS = ("Deadline Exceeded", "timed out during startup")


def _ray_start(args: list[str], num_cpus: int, temp_dir: str, settings: dict[str, str]) -> None:
    """`ray start` with this project's environment and the Ray `settings` (environment
    variables its processes inherit), on 127.0.0.1, with its own temp dir."""
    # job entrypoints say `python ...`: make that the project's environment
    os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    from fer_ray.runtime import SOFT_LIMIT_VARIABLE, worker_soft_limit  # imports ray: after enable_token_auth

    cmd = [f"{VENV_BIN}/ray", "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    # started as cluster/ starts its nodes
    env = {**os.environ, **settings, SOFT_LIMIT_VARIABLE: worker_soft_limit(num_cpus)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        failure = NodeStartTimedOut if any(m in done.stdout + done.stderr for m in GCS_TIMEOUTS) else AssertionError
        raise failure(f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def _processes(marks: tuple[str, ...]) -> set:
    """Processes whose command line names one of `marks`, and their children."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if any(mark in part for part in proc.info["cmdline"] or [] for mark in marks):
            found.add(proc)
            found.update(_children(proc))
    return found


def _kill(processes) -> None:
    for proc in processes:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


class WorkerNode:
    """`ray start --address` joining a head node, with its own temp dir and ports, so that
    several nodes share this machine and each can be found (and stopped) on its own."""

    START_ATTEMPTS = 3

    def __init__(self, head: HeadNode, num_cpus: int = 1):
        self.head = head
        self.temp_dir = tempfile.mkdtemp(prefix="ferray-node-")
        self.num_cpus = num_cpus

    def start(self) -> "WorkerNode":
        """Started again, on new ports and a new temp dir, when its registration with the GCS
        timed out (NodeStartTimedOut), up to START_ATTEMPTS times: the cluster is what the
        multinode tests need, not the thing they test."""
        ports = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
        for attempt in range(1, self.START_ATTEMPTS + 1):
            try:
                _ray_start([f"--address={self.head.address}", *[f"--{name}={free_port()}" for name in ports]],
                           self.num_cpus, self.temp_dir, self.head.settings)
                break
            except NodeStartTimedOut as timed_out:
                if attempt == self.START_ATTEMPTS:
                    raise
                print(f"worker node start {attempt} timed out, starting it again: {str(timed_out)[-300:]}")
                self.stop()
                self.temp_dir = tempfile.mkdtemp(prefix="ferray-node-")
        self.node_id = self._raylet_node_id()  # kept: the raylet may be killed later
        return self

    def raylet(self) -> psutil.Process:
        """The node's raylet (its session dir is under the node's own temp dir)."""
        return next(p for p in _processes((self.temp_dir,)) if p.name() == "raylet")

    def _raylet_node_id(self) -> str:
        """The node's Ray id, as the raylet was told it at start."""
        return next(part.split("=", 1)[1] for part in self.raylet().cmdline() if part.startswith("--node_id="))

    def processes(self) -> set:
        return _processes((self.temp_dir,))

    def stop(self) -> None:
        _kill(self.processes())
        time.sleep(1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class LocalCluster:
    """A head node that takes no work (0 CPUs) and `workers` worker nodes of `cpus` CPUs, all on
    127.0.0.1: jobs submitted to the head run on the workers, as on a real cluster."""

    # Each process reports its tasks' states to the state API every 100 ms, not every second:
    # a test that waits to see a batch running on a node (to lose the node under it) sees one
    # that runs for well under a second. With the default, a run on a loaded machine once
    # finished 10 batches on a node without one being seen running or queued there.
    SETTINGS = {"RAY_task_events_report_interval_ms": "100"}

    def __init__(self, workers: int = 2, cpus: int = 1):
        self.head = HeadNode(num_cpus=0, settings=self.SETTINGS)
        self.size, self.cpus = workers, cpus
        self.workers: list[WorkerNode] = []

    def start(self) -> "LocalCluster":
        self.head.start()
        self.workers = [WorkerNode(self.head, self.cpus).start() for _ in range(self.size)]
        self.wait_until_alive()
        return self

    def alive_nodes(self) -> set[str]:
        """The ids of the nodes Ray's state API reports alive."""
        from ray.util.state import list_nodes

        # a lost node's records may be missing from the answer: that is no error here
        nodes = list_nodes(address=self.head.dashboard, filters=[("state", "=", "ALIVE")],
                           raise_on_missing_output=False)
        return {node.node_id for node in nodes}

    def wait_until_alive(self) -> None:
        wanted = {worker.node_id for worker in self.workers}
        wait_for(lambda: len(self.alive_nodes()) == len(wanted) + 1 and wanted <= self.alive_nodes(), 90,
                 f"{len(wanted)} worker nodes and the head alive")

    def replace(self, lost: WorkerNode) -> WorkerNode:
        """A new worker node in place of a lost one (as an autoscaler would start), once Ray has
        declared the lost one dead."""
        wait_for(lambda: lost.node_id not in self.alive_nodes(), 90, "the lost node declared dead")
        lost.stop()
        new = WorkerNode(self.head, self.cpus).start()
        self.workers[self.workers.index(lost)] = new
        self.wait_until_alive()
        return new

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.head.stop()


def _children(proc) -> list:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def enable_token_auth() -> None:
    """Ray 2.60 token auth with a throwaway token for this session (never the user's)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


@contextlib.contextmanager
def without_ray_data_io_retries():
    """Runs started inside fail within seconds at whichever step a storage outage meets.
    Ray Data's own checkpoint writes retry an unreachable S3 10 times over about 160 s,
    whatever --storage-attempts says; the datasets a run creates take this process's
    DataContext, here without the error patterns Ray retries."""
    import ray

    context = ray.data.DataContext.get_current()
    saved, context.retried_io_errors = context.retried_io_errors, []
    try:
        yield
    finally:
        context.retried_io_errors = saved


def wait_for(condition, timeout: float, what: str):
    """condition()'s first truthy value, polled every 0.2 s; AssertionError after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# A batch handed to an actor is queued there until it runs; one that runs for under a second
# can go from queued to finished between two of the state API's updates, never seen running.
DONE = ("FINISHED", "FAILED")


def stage_batch_task(stage: str) -> str:
    """The state API's name of a batch that a `stage` actor runs (or has queued)."""
    return f"MapWorker(MapBatches({stage})).submit"


def stage_actors(stage: str) -> list[psutil.Process]:
    """The Ray actors of one stage class on this machine (their process title names it,
    e.g. ray::MapWorker(MapBatches(FaceStage)))."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::") and stage in cmdline[0]:
            found.append(process)
    return found


def train_workers() -> list[psutil.Process]:
    """Ray Train's worker actors on this machine (their process title names the actor)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::RayTrainWorker"):
            found.append(process)
    return found
