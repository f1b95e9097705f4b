"""Joining Ray (the one place the jobs and the CLI call `ray.init`), and fitting a run's
resource requests to the cluster it joined."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import weakref
from dataclasses import dataclass

import ray
import ray.data
from ray.data._internal.execution.execution_callback import ExecutionCallback

from fer_ray import logs
from fer_ray.config import ConfigError

# Ray keeps about one idle worker process per CPU and kills the others after a second
# idle, and Ray Data's bookkeeping actors (stats, autoscaling coordinator, actor
# locations) count among them. On a small node the process that just wrote a Parquet file
# was therefore killed, and each next write started a new Python process and imported Ray
# Data again: about a core-second each, and seconds of latency at the end of every job
# (bench/preprocess.py). A few spare idle workers keep one warm for the next short task.
SPARE_IDLE_WORKERS = 4
SOFT_LIMIT_VARIABLE = "RAY_num_workers_soft_limit"
CLUSTER_ANSWER_S = 5  # a head that takes longer to accept a connection is as good as down


def start_ray() -> None:
    """Connect to the cluster named by RAY_ADDRESS (or a running local one), else start a
    local instance. The worker limit applies to an instance started here; a cluster's
    nodes get it from their own start command (see cluster/)."""
    callbacks = ray.data.DataContext.get_current().custom_execution_callback_classes
    if KillActorsOfFailedRuns not in callbacks:
        callbacks.append(KillActorsOfFailedRuns)
    if ray.is_initialized():
        return
    check_ray_address()
    os.environ.setdefault(SOFT_LIMIT_VARIABLE, worker_soft_limit(os.cpu_count() or 1))
    ray.init(log_to_driver=_ray_output_shown, **local_instance_settings())
    if not _ray_output_shown:
        # Ray Data's own progress (tqdm bars on a terminal, log records elsewhere): the job
        # shows its own (fer_ray.progress); on a terminal Ray's bars would draw over it
        ray.data.DataContext.get_current().enable_progress_bars = not sys.stdout.isatty()


STARTS_NO_RAY = {"export"}  # quiet all the same: torch's exporter has output of its own


@contextlib.contextmanager
def ray_output_to_log(run_log, command: str, caller: str, show_hint: str):
    """While the block runs, Ray's own output (progress records, warnings, its C++ core's log
    lines) goes to the run log (logs.LibraryOutputToLog), and a Ray instance started meanwhile
    neither forwards its workers' output here nor draws Ray Data's progress bars. First it says
    so in one line: `caller` (how the user called `command`) and `show_hint` (how to see it)."""
    whose = "the libraries'" if command in STARTS_NO_RAY else "Ray's"
    print(f"{caller}: {whose} own output goes to {run_log.path} ({show_hint} shows it here)", flush=True)
    show_ray_output(False)
    try:
        with logs.LibraryOutputToLog(run_log):
            yield
    finally:
        show_ray_output(True)


@contextlib.contextmanager
def ray_of_one_command():
    """Ray for the length of one command: an instance it starts, or a cluster it joins, is
    shut down (left) when the command ends rather than at the process's exit. Ray relays the
    raylet's warnings to the driver as they come (e.g. "14 PYTHON worker processes have been
    started"), and the last can come after the command's work is done: shut down inside the
    CLI's quiet mode, they go to the run log, not to the screen under the command's last line.
    A Ray that was up before (a notebook's, a test session's) is left as it was."""
    started_here = not ray.is_initialized()
    try:
        yield
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def exit_on_signal(signum: int, _frame) -> None:
    """A handler ending the process as Ray's own SIGTERM handler does (SystemExit(signum)), so
    that `finally` blocks run."""
    sys.exit(signum)


@contextlib.contextmanager
def signal_handlers_kept(*signals: int):
    """The process's handlers of `signals` put back as they were when the block ends: Ray Train
    and Tune install their own for a run and leave them installed. Only the main thread can set
    handlers (elsewhere nothing is installed, and nothing is put back); a handler not set from
    Python (getsignal gives None) cannot be put back either."""
    before = {sig: signal.getsignal(sig) for sig in signals} if in_main_thread() else {}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)


def check_ray_address() -> None:
    """Fail in seconds, naming the variable, when RAY_ADDRESS names a cluster that does not
    answer or that refuses our token: ray.init would retry a silent address for minutes
    and, on a wrong token, end with only "Failed to connect to Ray cluster"."""
    from ray._private.services import canonicalize_bootstrap_address

    given = os.environ.get("RAY_ADDRESS", "")
    if given in ("", "auto", "local"):
        return  # a local instance: started here, or found among this machine's live processes
    client = given.startswith("ray://")
    try:
        address = given.removeprefix("ray://") if client else canonicalize_bootstrap_address(given)
        host, port = address.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=CLUSTER_ANSWER_S).close()
    except (ValueError, OSError) as error:
        raise ConfigError(f"RAY_ADDRESS: no Ray cluster answers at {given!r} ({error}): expected the head "
                          "node's host:port (its port 6379 unless `ray start --head --port` said otherwise) "
                          "or ray://host:port for Ray Client; the dashboard's http://...:8265 is for `ray job "
                          "submit`. Start the cluster, correct the address, or unset RAY_ADDRESS to run on a "
                          "local instance") from None
    if not client:
        check_token_accepted(address)


def check_token_accepted(address: str) -> None:
    from ray._raylet import GcsClient

    try:
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        raise ConfigError(f"RAY_AUTH_TOKEN: the Ray cluster at {address} refused this process's token: set "
                          "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or the file "
                          "~/.ray/auth_token that `ray get-auth-token` prints)") from None


class KillActorsOfFailedRuns(ExecutionCallback):
    """Kills a failed run's actors (face detectors, classifiers) when the run fails.

    Ray Data lets go of them by dropping its references and leaves the rest to reference
    counting, but the failure's traceback reaches them (through the executor's frames), and
    whatever keeps that traceback (pytest's and IPython's `sys.last_traceback`, a logged
    exception, a notebook's history) keeps them alive holding their CPUs: the next run in
    that process (a resume after a storage outage, say) then waits for CPUs forever. The
    handles are held weakly, so that actors Ray Data scales down mid-run still go."""

    def __init__(self):
        self.actors: weakref.WeakSet = weakref.WeakSet()

    def on_execution_step(self, executor) -> None:
        for op in executor._topology:
            for pool in op.get_autoscaling_actor_pools():
                # private in Ray 2.60 (pinned): the pool's handles, started and starting
                self.actors.update(pool._running_actors)
                self.actors.update(pool._pending_actors.values())

    def after_execution_fails(self, executor, error: Exception) -> None:
        for actor in list(self.actors):
            ray.kill(actor)
        self.actors.clear()

    def after_execution_succeeds(self, executor) -> None:
        self.actors.clear()


def local_instance_settings() -> dict:
    """ray.init's settings for a local instance started here ({} when joining a cluster): its
    dashboard on a free port, which the instance's workers are told. Ray code in workers
    (Ray Train's placement-group cleaner, for one) finds the dashboard by looking for the
    Ray instances on the machine, and with two or more it fails instead: the cleaner's
    thread then dies, a stopped Tune trial's placement group is never removed, and the
    sweep's next trial waits for its CPUs forever. No dashboard where it is not wanted
    (want_dashboard)."""
    from ray._private.services import canonicalize_bootstrap_address

    if canonicalize_bootstrap_address(None) is not None or os.environ.get(API_SERVER_VARIABLE):
        return {}
    if not _dashboard_wanted:
        return {"include_dashboard": False}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {"dashboard_port": port,
            "runtime_env": {"env_vars": {API_SERVER_VARIABLE: f"http://127.0.0.1:{port}"}}}


API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"
_ray_output_shown = True
_dashboard_wanted = True


def want_dashboard(wanted: bool) -> None:
    """Whether a local instance this process starts runs Ray's dashboard (a cluster's is the
    cluster's). The CLI starts one without it for a command that runs no Ray Train: the
    command shows its own progress, and the instance ends with it; the dashboard's dozen
    processes took 4-5 core-seconds of every such run on 2 cores. Ray Train needs it (see
    local_instance_settings), so a notebook's instance keeps it for what comes next."""
    global _dashboard_wanted
    _dashboard_wanted = wanted


def ray_output_shown() -> bool:
    return _ray_output_shown


def show_ray_output(shown: bool) -> None:
    """Whether a Ray instance this process starts forwards its workers' output and draws Ray
    Data's progress bars here (the CLI turns both off unless --verbose; the workers' output
    stays in Ray's session logs)."""
    global _ray_output_shown
    _ray_output_shown = shown


def worker_soft_limit(cpus: int) -> str:
    """The value of RAY_num_workers_soft_limit for a node with `cpus` CPUs."""
    return str(cpus + SPARE_IDLE_WORKERS)


# Logical CPUs for operators that mostly wait on storage or do bookkeeping (reading,
# fetching, writing). Giving them a whole CPU each would leave the model actors, which
# really use a core each, fewer cores than the machine has.
LIGHT_CPUS = 0.1

# Ray retries a task, or restarts an actor and retries its task, when the process dies
# (killed, out of memory, a crash in native code). Ray Data's defaults retry forever: an
# input that crashes its worker every time would then stall the run for good. A few
# retries cover a lost worker; past them the run fails and can be resumed. Exceptions
# raised by our own code are not retried (per-item problems are data already; the rest
# are systemic).
SYSTEM_FAILURE_RETRIES = 3

# An actor task (a face or segment batch) whose actor's node is lost is retried while the actor
# is unreachable, with a doubling delay (1, 1, 1, 1, 2, 4 s ... measured on Ray 2.60), until
# Ray declares the node dead (about 15 s after a raylet dies) and restarts the actor elsewhere;
# each of those attempts counts as a retry. Three were spent before the node was declared dead
# (tests/multinode), so the run failed; twelve cover minutes of an unreachable node, and an
# input that crashes its actor every time still ends the run after twelve restarts.
ACTOR_TASK_RETRIES = 12


def available_cpus() -> int:
    return available("CPU", os.cpu_count())


def available(resource: str, default: int | None = 0) -> int:
    """Whole units of a resource in the cluster (at least 1)."""
    amount = ray.cluster_resources().get(resource, 0) if ray.is_initialized() else default
    return max(1, int(amount or 1))


# ---------------------------------------------------------------- fitting a run to the cluster
#
# Ray never refuses a request the cluster cannot grant: a worker group's placement group or
# an actor that asks for more than there is simply waits, forever. So a run compares what it
# will ask for with what the cluster has before it starts, and fails at once with what to
# change. The functions below are pure (a Capacity in, a value or a ConfigError out);
# cluster_capacity() is the one place that asks Ray.

# Ray Data's read and map tasks ask for a whole CPU each (its default): the worker groups must
# leave one CPU free, or training waits on its data forever.
DATA_CPUS = 1.0
AUTO_CPUS_PER_WORKER = 1.0
# Fitted CPU shares are rounded down to this step: readable in config.yaml, and their sums
# never exceed the cluster through float rounding.
CPU_STEP = 0.01
_SLACK = 1e-9  # float error allowed when comparing sums with the cluster's amounts


@dataclass(frozen=True)
class Capacity:
    """What the cluster can hold: its total resources, and each node's (on an autoscaling
    cluster, each node type's: one worker must fit on one node)."""
    resources: dict
    nodes: tuple = ()

    @classmethod
    def of_nodes(cls, *nodes: dict) -> "Capacity":
        totals: dict = {}
        for node in nodes:
            for name, amount in node.items():
                totals[name] = totals.get(name, 0) + amount
        return cls(totals, tuple(nodes))

    @classmethod
    def of_node_types(cls, types: list[tuple[dict, int]], limits: dict | None = None) -> "Capacity":
        """An autoscaling cluster: (resources of one node, most nodes of that type; -1 = no
        limit) per type, and the cluster-wide limits of its config."""
        totals: dict = {}
        for node, count in types:
            for name, amount in node.items():
                totals[name] = totals.get(name, 0) + (math.inf if count < 0 else amount * count)
        for name, limit in (limits or {}).items():
            if name in totals:
                totals[name] = min(totals[name], limit)
        return cls(totals, tuple(node for node, count in types if count != 0))

    def amount(self, name: str) -> float:
        return float(self.resources.get(name, 0))

    def holds_on_one_node(self, need: dict) -> bool:
        return any(_holds(node, need) for node in self.nodes)

    def most_on_a_node(self, name: str, beside: dict | None = None) -> float:
        """The most of `name` that one node has among the nodes that also hold `beside`."""
        holding = [node for node in self.nodes if _holds(node, beside or {})]
        return max((float(node.get(name, 0)) for node in holding), default=0.0)


def _holds(node: dict, need: dict) -> bool:
    return all(float(node.get(name, 0)) + _SLACK >= amount for name, amount in need.items() if amount)


def cluster_capacity() -> Capacity:
    """The connected cluster's capacity: the node types its autoscaler may start when it has
    one (a run there waits for nodes, not forever), else its alive nodes."""
    types = _autoscaler_node_types()
    if types:
        return Capacity.of_node_types(*types)
    nodes = tuple(dict(node["Resources"]) for node in ray.nodes() if node.get("Alive"))
    return Capacity(dict(ray.cluster_resources()), nodes)


def _autoscaler_node_types() -> tuple[list[tuple[dict, int]], dict] | None:
    """The autoscaler's node types and limits as it reports them to the cluster (the same
    record Ray Train and Ray Data read to size their requests); None without an autoscaler."""
    from ray._private import state

    config = state.state.get_cluster_config()
    if not config or not config.node_group_configs:
        return None
    types = [(dict(group.resources), group.max_count) for group in config.node_group_configs]
    return types, dict(config.max_resources)


def fit_train(workers: int, cpus_per_worker: float, gpu: bool, capacity: Capacity,
              trial_cpus: float = 0.0) -> float:
    """The CPUs per Ray Train worker for this cluster: cpus_per_worker when it fits, the
    fitted share when it is 0 (auto); ConfigError when the worker group cannot be placed.

    trial_cpus: what the Tune trial that runs this training holds beside its worker group.
    """
    if gpu:
        check_gpus(workers, capacity)
    cpus = cpus_per_worker or auto_cpus_per_worker(workers, capacity, trial_cpus)
    if cpus_per_worker:
        check_cpus(workers, cpus_per_worker, capacity, trial_cpus)
    check_worker_fits_a_node(cpus, gpu, capacity)
    return cpus


def auto_cpus_per_worker(workers: int, capacity: Capacity, trial_cpus: float = 0.0) -> float:
    """1 CPU per worker, or the equal share of what Ray Data's reading and the Tune trial leave."""
    spare = capacity.amount("CPU") - DATA_CPUS - trial_cpus
    share = min(AUTO_CPUS_PER_WORKER, round_down(spare / workers))
    if share < CPU_STEP:
        fewer = int((spare + _SLACK) // CPU_STEP)
        change = f"use --workers {fewer}" if 1 <= fewer < workers else "use a cluster with more CPUs"
        group = f"{_amount(workers, 'worker')} of at least {CPU_STEP:g} CPU each{besides(trial_cpus)}"
        need, has = _cpus(workers * CPU_STEP + trial_cpus + DATA_CPUS), _cpus(capacity.amount("CPU"))
        raise ConfigError(f"workers: {group} need {need}, the cluster has {has}: {change}")
    return share


def check_cpus(workers: int, cpus_per_worker: float, capacity: Capacity, trial_cpus: float = 0.0) -> None:
    """An explicit cpus_per_worker: the workers, the trial and Ray Data's reading must fit."""
    need = workers * cpus_per_worker + trial_cpus + DATA_CPUS
    if need <= capacity.amount("CPU") + _SLACK:
        return
    spare = capacity.amount("CPU") - DATA_CPUS - trial_cpus
    changes = []
    if round_down(spare / workers) >= CPU_STEP:
        changes.append(f"--cpus-per-worker {round_down(spare / workers):g} (or 0 to fit the cluster)")
    fewer = int((spare + _SLACK) // cpus_per_worker)
    if 1 <= fewer < workers:
        changes.append(f"--workers {fewer}")
    change = f"use {' or '.join(changes)}" if changes else "use a cluster with more CPUs"
    group = f"{_amount(workers, 'worker')} x {_cpus(cpus_per_worker)}{besides(trial_cpus)}"
    raise ConfigError(f"cpus_per_worker: {group} need {_cpus(need)}, the cluster has "
                      f"{_cpus(capacity.amount('CPU'))}: {change}")


def check_gpus(workers: int, capacity: Capacity) -> None:
    """gpu: one whole GPU per worker."""
    gpus = capacity.amount("GPU")
    if workers <= gpus + _SLACK:
        return
    need = f"{_amount(workers, 'worker')} x 1 GPU need {_amount(workers, 'GPU')}"
    if gpus < 1:
        raise ConfigError(f"gpu: {need}, the cluster has none: leave out --gpu (train on CPUs) "
                          "or use a cluster with GPUs")
    raise ConfigError(f"gpu, workers: {need}, the cluster has {_amount(gpus, 'GPU')}: "
                      f"use --workers {int(gpus + _SLACK)}")


def check_worker_fits_a_node(cpus_per_worker: float, gpu: bool, capacity: Capacity) -> None:
    """One worker's CPUs (and GPU) must be on one node: the cluster's total is not enough."""
    gpus = {"GPU": 1} if gpu else {}
    if capacity.holds_on_one_node({"CPU": cpus_per_worker, **gpus}):
        return
    most = capacity.most_on_a_node("CPU", beside=gpus)
    where = "a node with a GPU" if gpu else "a node"
    raise ConfigError(f"cpus_per_worker: one worker needs {_cpus(cpus_per_worker)}{' and 1 GPU' if gpu else ''} "
                      f"on one node, the most {where} has is {_cpus(most)}: use --cpus-per-worker {most:g} or less")


def trials_at_once(workers: int, cpus_per_worker: float, gpu: bool, capacity: Capacity, trial_cpus: float,
                   requested: int = 0) -> int:
    """How many Tune trials run at once: `requested` if the cluster holds that many, else (0)
    as many as it holds, each trial being its worker group plus trial_cpus, with Ray Data's
    reading kept one CPU. Expects fit_train to have passed (one trial fits)."""
    per_trial = workers * cpus_per_worker + trial_cpus
    fit = int((capacity.amount("CPU") - DATA_CPUS + _SLACK) // per_trial)
    if gpu:
        fit = min(fit, int((capacity.amount("GPU") + _SLACK) // workers))
    fit = max(1, fit)
    if requested > fit:
        need, has = _cpus(requested * per_trial + DATA_CPUS), _cpus(capacity.amount("CPU"))
        if gpu:
            need, has = f"{need} and {requested * workers} GPUs", f"{has} and {capacity.amount('GPU'):g} GPUs"
        trial = f"{_amount(workers, 'worker')} x {_cpus(cpus_per_worker)}{' and 1 GPU' if gpu else ''}"
        raise ConfigError(
            f"max_concurrent: {requested} trials at once, each {trial} plus {trial_cpus:g} for its Tune trial, "
            f"with {DATA_CPUS:g} for Ray Data's reading, need {need}; the cluster has {has}: "
            f"use --max-concurrent {fit} or 0 (as many as fit)")
    return requested or fit


def actor_pool_size(workers: int, num_gpus: float, reserved_cpus: int, gpu_shares_taken: int = 0) -> int:
    """How many face actors to start: `workers` when set; on GPUs as many num_gpus shares
    as the cluster's GPUs hold beside gpu_shares_taken others (predict's classifier); on
    CPUs one per CPU but those Ray's own operators hold (reserved_cpus). At least one."""
    if workers:
        return workers
    if num_gpus > 0:
        return max(1, int(available("GPU") / num_gpus + _SLACK) - gpu_shares_taken)
    return max(1, available_cpus() - reserved_cpus)


def check_face_actors(workers: int, num_gpus: float, cpus_per_actor: float, capacity: Capacity) -> None:
    """Preprocess's face actors: `workers` of them (0 = as many as the cluster holds, at least
    one), each num_gpus GPUs and cpus_per_actor CPUs, must find their GPUs and a node each."""
    if num_gpus > 0:
        check_actor_gpus(workers, num_gpus, capacity)
    if capacity.holds_on_one_node({"CPU": cpus_per_actor, "GPU": num_gpus}):
        return
    if num_gpus > 0:
        most = capacity.most_on_a_node("GPU", beside={"CPU": cpus_per_actor})
        raise ConfigError(f"num_gpus: a face actor needs {_amount(num_gpus, 'GPU')} and {_cpus(cpus_per_actor)} on "
                          f"one node, the most a node has is {_amount(most, 'GPU')}: use --num-gpus {most:g} or less")
    raise ConfigError(f"workers: a face actor needs {_cpus(cpus_per_actor)} on one node, the most a node has is "
                      f"{_cpus(capacity.most_on_a_node('CPU'))}: use a cluster whose nodes have CPUs")


def check_actor_gpus(workers: int, num_gpus: float, capacity: Capacity) -> None:
    """One face actor's GPU share, or `workers` of them, must be in the cluster."""
    gpus, actors = capacity.amount("GPU"), max(workers, 1)
    if gpus + _SLACK < num_gpus:
        has = "none" if gpus <= 0 else f"{gpus:g}"
        raise ConfigError(f"num_gpus: a face actor asks for {_amount(num_gpus, 'GPU')}, the cluster has {has}: "
                          "use --num-gpus 0 (CPU) or a cluster with GPUs")
    if actors * num_gpus > gpus + _SLACK:
        need = f"{actors} face actors x {_amount(num_gpus, 'GPU')} need {_amount(actors * num_gpus, 'GPU')}"
        most = int((gpus + _SLACK) // num_gpus)
        raise ConfigError(f"workers: {need}, the cluster has {gpus:g}: "
                          f"use --workers {most} or 0 (as many as the GPUs hold)")


def check_classifier_gpu(workers: int, num_gpus: float, capacity: Capacity) -> None:
    """Predict's classifier actor holds one more GPU share beside `workers` face actors (0 =
    as many as fit, at least one): all the shares must be in the cluster."""
    gpus, face_actors = capacity.amount("GPU"), max(workers, 1)
    need = (face_actors + 1) * num_gpus
    if need <= gpus + _SLACK:
        return
    actors = "1 face actor" if face_actors == 1 else f"{face_actors} face actors"
    fewer = int((gpus + _SLACK) // num_gpus) - 1
    raise ConfigError(f"num_gpus: {actors} and the classifier, {_amount(num_gpus, 'GPU')} each, need "
                      f"{_amount(need, 'GPU')}, the cluster has {gpus:g}: use --num-gpus "
                      f"{round_down(gpus / (face_actors + 1)):g} or less"
                      + (f", or --workers {fewer}" if workers and fewer >= 1 else ""))


def round_down(amount: float) -> float:
    """amount rounded down to CPU_STEP."""
    return round(math.floor(amount / CPU_STEP + _SLACK) * CPU_STEP, 2)


def besides(trial_cpus: float) -> str:
    """What a worker group's CPUs come on top of, in words."""
    parts = [f"{trial_cpus:g} for the Tune trial"] if trial_cpus else []
    return " plus " + " and ".join([*parts, f"{DATA_CPUS:g} for Ray Data's reading"])


def _cpus(amount: float) -> str:
    return _amount(amount, "CPU")


def _amount(amount: float, unit: str) -> str:
    """'0.5 CPU', '1 GPU', '2 GPUs'."""
    return f"{amount:g} {unit}" if amount <= 1 else f"{amount:g} {unit}s"
