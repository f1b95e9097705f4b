"""Stage, commit, resume: how the batch jobs write their output (DESIGN.md, "Runs").

A run is identified by its job, the configuration fields that shape its result, and a
fingerprint of its input (names, sizes and modification times). It writes under
`<output>/runs/<id>/` and is published by a commit marker (fer_ray.results) once every
input is accounted for.

Its units are the inputs themselves. Ray Data's row checkpointing (`CheckpointConfig` on
the dataset's context) records, per write task, the ids of the inputs whose rows the task
wrote, in two phases around the files (pipelines.writer); a rerun of the same run filters
those inputs out right after reading, and deletes the files of tasks left pending. So
when a job starts:
  - the committed run has this id  -> up to date: nothing to do
  - runs/<id>/ exists uncommitted  -> resumed: the committed units are skipped
  - otherwise                      -> a new run, and it says what changed
`restart` forces a new run under a fresh id. Either way the previous commit stays
readable until this run commits.

A new run may be seeded from the committed one (`seed_source`): when that is a run of the
same job with the same result settings, only its input differs, and a job may carry over
the units whose input is unchanged instead of computing them again (label-videos does,
per video). The carried rows are copied into the new run, so the commit that supersedes
the old run still lists only files of its own.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import ray.data
from ray.data.checkpoint import CheckpointConfig
from ray.data.checkpoint.checkpoint_writer import PENDING_CHECKPOINT_SUFFIX

from fer_ray import config, reports, results, storage
from fer_ray.config import RetryConfig
from fer_ray.lease import OutputLease, held
from fer_ray.logs import say
from fer_ray.pipelines.writer import COUNTS_FOLDER, read_counts

log = logging.getLogger(__name__)

# Fields that change how a run executes, not what it produces: a run resumed with other
# values of these is still the same run.
EXECUTION_FIELDS = ("output", "workers", "batch_size", "num_gpus", "restart", "rows_per_file", "retry")
RUN_FILE = "run.json"
NEW, RESUMED, RESTARTED, UP_TO_DATE = "new", "resumed", "restarted", "up to date"
# Ray reads its checkpoint in a resumed run: a listing task that needs a whole CPU.
CHECKPOINT_FILTER_CPUS = 1
PENDING_FILE = f"{PENDING_CHECKPOINT_SUFFIX}.parquet"  # how a write task's uncommitted checkpoint ends


class RunError(RuntimeError):
    """The run finished its work but cannot be committed as complete (nothing published)."""


@dataclass
class StagedRun:
    job: str
    output: str
    id: str
    state: str
    identity: dict
    retry: RetryConfig
    units_skipped: int = 0
    started: float = 0.0
    units_carried: int = 0  # inputs unchanged since the committed run, taken from it
    lease: OutputLease | None = None  # held from `holding` to the commit
    units_listed: int = 0
    unit_name: str = "inputs"

    def uri(self, *parts: str) -> str:
        return results.run_uri(self.output, self.id, *parts)

    @property
    def checkpoint_uri(self) -> str:
        return storage.join(self.output, results.CHECKPOINTS_DIR, self.id)

    @property
    def up_to_date(self) -> bool:
        return self.state == UP_TO_DATE

    @property
    def reserved_cpus(self) -> int:
        """CPUs Ray's own operators of this run hold (a pool sized to the cluster leaves them).

        Any resumed run, not only one with inputs counted as committed when it was planned: a
        failed attempt's last write can commit Ray's checkpoint after that (seen after a storage
        outage), and Ray then lists the checkpoint, in a task needing a whole CPU, beside a face
        pool that had taken every CPU: it waited forever."""
        return CHECKPOINT_FILTER_CPUS if self.state == RESUMED else 0

    def report(self) -> dict:
        return {"run": self.id, "run_state": self.state, "units_skipped": self.units_skipped,
                "units_carried": self.units_carried}


def result_settings(cfg) -> dict:
    """The config as a dict without its execution fields (what a run's id depends on)."""
    return {k: v for k, v in config.to_dict(cfg).items() if k not in EXECUTION_FIELDS}


def absolute_paths(cfg) -> None:
    """A job's local input and output made absolute on the driver, in place: its Ray workers
    run in another working directory (the cluster's, not a notebook's or a script's)."""
    cfg.input, cfg.output = storage.absolute(cfg.input), storage.absolute(cfg.output)


def check_input_output(input_uri: str, output: str, retry: RetryConfig, is_file: bool = False) -> None:
    """The input must be readable, the output (a directory, or a file when is_file) writable
    and apart from the input: writing inside the input would make the outputs inputs of the
    next run, and the input inside the output could be removed with a superseded run.
    Storage calls retry as the run's own do (`retry`)."""
    problem = storage.check_readable(input_uri, retry)
    if problem:
        raise config.ConfigError(f"input: {problem}")
    if storage.overlaps(input_uri, output):
        raise config.ConfigError(f"output: {output} overlaps the input {input_uri}; choose an output outside it "
                                 f"(and not containing it)")
    problem = storage.check_writable(posixpath.dirname(output.rstrip("/")) if is_file else output, retry)
    if problem:
        raise config.ConfigError(f"output: {problem}")


def plan(job: str, output: str, settings: dict, fingerprint: str, restart: bool = False,
         retry: RetryConfig | None = None) -> StagedRun:
    """Decide what this run is (new, resumed, restarted or up to date); touches nothing."""
    identity = {"job": job, "settings": settings, "input": fingerprint}
    run_id = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    retry = retry or RetryConfig()
    commit = results.read_commit(output)
    if restart:
        run_id = f"{run_id}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:4]}"
        return StagedRun(job, output, run_id, RESTARTED, identity, retry)
    if commit is not None and commit.run == run_id:
        return StagedRun(job, output, run_id, UP_TO_DATE, identity, retry)
    staged = StagedRun(job, output, run_id, NEW, identity, retry)
    if storage.exists(staged.uri(RUN_FILE), retry):
        staged.state, staged.units_skipped = RESUMED, committed_units(staged)
    return staged


@contextlib.contextmanager
def holding(job: str, cfg, fingerprint: str, settings: dict | None = None) -> Iterator[StagedRun]:
    """The run of `job` into cfg.output (settings: what shapes its result, by default
    `result_settings(cfg)`), planned while it holds the output's lease (fer_ray.lease),
    which is released when the block ends: one run per output at a time. A run that is up to
    date writes nothing and takes no lease. Planned again once the lease is held: a run that
    held it a moment ago may have committed (this run is then up to date) or staged this run."""
    settings = result_settings(cfg) if settings is None else settings

    def planned() -> StagedRun:
        return plan(job, cfg.output, settings, fingerprint, cfg.restart, cfg.retry)

    run = planned()
    if run.up_to_date:
        yield run
        return
    with held(cfg.output, job, run.id, cfg.retry) as output_lease:
        if run.state != RESTARTED:  # a restarted run's id is its own
            run = planned()
        run.lease = output_lease
        yield run


def seed_source(run: StagedRun) -> results.Commit | None:
    """The committed run this run may carry unchanged inputs over from: a run of the same job
    with the same result settings (so only the input differs). None for a restart, which
    computes everything again."""
    if run.state in (RESTARTED, UP_TO_DATE):
        return None
    commit = results.read_commit(run.output)
    if commit is None or commit.job != run.job or commit.run == run.id:
        return None
    previous = committed_identity(commit, run.retry)
    if previous is None or previous.get("settings") != _as_json(run.identity["settings"]):
        return None
    return commit


def committed_identity(commit: results.Commit, retry: RetryConfig | None = None) -> dict | None:
    """The committed run's identity (its run.json), None when it records none."""
    try:
        return json.loads(storage.read_bytes(commit.run_uri(RUN_FILE), retry))
    except (FileNotFoundError, ValueError):
        return None


def _as_json(value):
    """`value` as run.json holds it (tuples as lists, other objects as strings)."""
    return json.loads(json.dumps(value, default=str))


def committed_units(run: StagedRun) -> int:
    """How many inputs earlier attempts of the run wrote and committed: the inputs counted
    by the write tasks whose checkpoint Ray committed (a pending one does not count)."""
    committed = committed_tasks(run)
    counts = [uri for uri in files_under(run, run.uri(COUNTS_FOLDER), ".json")
              if task_name(uri) in committed]
    return sum(json.loads(storage.read_bytes(uri, run.retry)).get("inputs", 0) for uri in counts)


def committed_tasks(run: StagedRun) -> set[str]:
    """The names of the write tasks whose files Ray's checkpoint marks committed."""
    return {task_name(uri) for uri in files_under(run, run.checkpoint_uri, ".parquet")
            if not uri.endswith(PENDING_FILE)}


def task_name(uri: str) -> str:
    """`<write id>_<task>` of a task's data, counts or checkpoint file."""
    return posixpath.basename(uri).rsplit(".", 1)[0]


def files_under(run: StagedRun, uri: str, extension: str) -> list[str]:
    """The files of one extension under a URI of the run (none if it does not exist)."""
    return storage.list_files(uri, (extension,), run.retry) if storage.exists(uri, run.retry) else []


def begin(run: StagedRun, cfg_yaml: str) -> None:
    """Say what this run does, and stage its configuration and identity."""
    run.started = time.time()
    say(describe(run))
    if run.state == RESUMED:
        settle_checkpoints(run)
    else:
        storage.write_bytes(run.uri("config.yaml"), cfg_yaml.encode(), run.retry)
        storage.write_bytes(run.uri(RUN_FILE), json.dumps(run.identity, indent=1, default=str).encode(), run.retry)


def settle_checkpoints(run: StagedRun) -> None:
    """Finish the checkpoint commits an outage cut in half. On S3, Ray commits a write task's
    checkpoint by copying its pending file to the committed name, then deleting the pending
    one; when only the delete fails, both stay. The rerun's cleanup of pending tasks would
    then delete that task's files and counts while its committed checkpoint still skips its
    inputs: they would be lost (the run could never account for them). The committed file is
    made only after the task's files are written, so the task is complete; drop its pending
    file, as Ray's own commit does when it finds both."""
    committed = committed_tasks(run)
    for uri in files_under(run, run.checkpoint_uri, PENDING_FILE):
        if posixpath.basename(uri).removesuffix(PENDING_FILE) in committed:
            log.warning("%s: the checkpoint of write task %s was committed but its pending file stayed; "
                        "removing the pending file", run.job, posixpath.basename(uri))
            storage.remove_dir(uri, run.retry)


def describe(run: StagedRun) -> str:
    return describe_state(run) + carried_note(run)


def carried_note(run: StagedRun) -> str:
    if not run.units_carried:
        return ""
    return (f"; {run.units_carried} of {run.units_listed} {run.unit_name} unchanged since the committed run "
            f"are carried over")


def describe_state(run: StagedRun) -> str:
    where = f"{run.job} run {run.id} in {run.output}"
    if run.state == RESUMED:
        return f"resuming {where}: {run.units_skipped} inputs already committed are skipped"
    if run.state == RESTARTED:
        return f"restarting: new {where} (any committed result stays until this run commits)"
    commit = results.read_commit(run.output)
    if commit is None:
        return f"new {where}"
    return (f"new {where}: {changes_since(commit, run.identity)}; "
            f"the committed run {commit.run} stays until this one commits")


def changes_since(commit: results.Commit, identity: dict) -> str:
    """What differs from the committed run's identity: settings by name, or the input."""
    previous = committed_identity(commit)
    if previous is None:
        return "the committed run records no identity"
    changed = [f"{path}: {old!r} -> {new!r}" for path, (old, new) in
               sorted(_differences(previous.get("settings", {}), identity["settings"]).items())]
    if previous.get("input") != identity["input"]:
        changed.append("the input changed (files added, removed or modified)")
    return "changed since the committed run: " + "; ".join(changed) if changed else "same settings"


def _differences(old: dict, new: dict, prefix: str = "") -> dict:
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = (a, b)
    return out


def checkpointed(run: StagedRun, ds: ray.data.Dataset, id_column: str) -> ray.data.Dataset:
    """`ds` with Ray Data's row checkpointing of this run: its writes record the ids of
    `id_column` (present in every row read and every row written), and committed ids are
    filtered out after reading."""
    fs, path = storage.resolve(run.checkpoint_uri)
    ds.context.checkpoint_config = CheckpointConfig(
        id_column=id_column, checkpoint_path=path, override_filesystem=fs,
        delete_checkpoint_on_success=False)  # dropped by the commit, not before it
    # A stage's own error (storage unreachable, say) reaches the driver as itself, not as
    # Ray Data's "UDF failed", so the run's one-line failure names what went wrong.
    ds.context.raise_original_map_exception = True
    # A block that still fails after Ray's retries fails the run (resumable), never dropped:
    # per-input problems are statuses already, so a failed block is a systemic error.
    ds.context.max_errored_blocks = 0
    return ds


def finish_counts(run: StagedRun, expected_inputs: int | None) -> dict:
    """The run's counts (every committed task of every attempt, added up), once they show
    that every input is accounted for; else RunError, and nothing is published. A run whose
    lease was taken over fails here first, naming the run that holds it now (a run sharing
    the output meanwhile would otherwise show only as counts that do not add up)."""
    if run.lease is not None:
        run.lease.check_held()
    totals = read_counts(run.uri(), run.retry)
    accounted = totals.get("inputs", 0)
    if expected_inputs is not None and accounted != expected_inputs:
        raise RunError(f"{run.job}: {accounted} of {expected_inputs} inputs are accounted for in {run.uri()}; "
                       f"nothing was published (the previous result is unchanged); run again with --restart")
    return totals


def publish(run: StagedRun, folders: tuple[str, ...], **info) -> results.Commit:
    """Commit the run: its files of `folders`, listed in the output's marker; then its
    results page (after the commit: the page only reads what the commit published)."""
    files = {folder: run_files(run, folder) for folder in folders}
    check_committed(run, files)
    if run.lease is not None:
        run.lease.check_held()
    commit = results.Commit(run.output, run.job, run.id, files, info)
    results.publish(commit, run.retry)
    reports.write_after_run(run.output)
    return commit


def run_files(run: StagedRun, folder: str, absolute: bool = False) -> list[str]:
    """The run's Parquet files of a folder (URIs, or paths relative to the output)."""
    found = files_under(run, run.uri(folder), ".parquet")
    return found if absolute else [storage.relative(f, run.output) for f in found]


def check_committed(run: StagedRun, files: dict[str, list[str]]) -> None:
    """Every data file must belong to a write task whose checkpoint Ray committed: a file
    of a task that never committed would hold rows the run may also have written again."""
    committed = committed_tasks(run)
    stray = [path for paths in files.values() for path in paths if task_name(path) not in committed]
    if stray:
        raise RunError(f"{run.job}: {len(stray)} files in {run.uri()} belong to no committed write "
                       f"(e.g. {stray[0]}); nothing was published; run again with --restart")


def committed_summary(run: StagedRun) -> dict:
    """The committed summary, when this very run is what the output already holds."""
    say(f"up to date: {run.output} already holds {run.job} run {run.id} of this configuration and input "
        f"(pass --restart to run it again)")
    return {**results.committed(run.output, "output").summary(), **run.report()}
