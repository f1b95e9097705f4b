"""One run per output at a time: a lease file, `<output>/_lease.json`, that a run holds from
its plan to its commit.

Two runs writing into one output at once destroy each other's work: the first to publish
removes the other's staged files and Ray's checkpoints under it (results.remove_superseded),
and two runs of the same id write into the same folder, where a commit could list both
runs' files. So a run takes the output's lease before it stages anything, and a second run
is refused in one line naming the holder.

Object stores have no atomic create-if-absent that pyarrow exposes, so the lease is taken in
three steps: read (nobody holds it), write ours, then read it again a wait later. Two runs can
both believe they hold it only if one of them took longer between its read and its write than
the other waited. A try that took more than half its wait does not count: the run tries again,
each try waiting twice as long as the one before (`CONFIRM_S` first), so slow storage (a far
region, a loaded server) gets the lease on a later try instead of a refusal on every try.
What timing cannot rule out (a slow try writing over a lease a quick run has just confirmed)
the heartbeat and the check before a commit catch: the run that lost its lease publishes
nothing. S3 reads after writes are strongly consistent, as are local files.

The holder rewrites the lease every `HEARTBEAT_S`. A lease not rewritten for `EXPIRES_S` is
stale (its run died without releasing it), and so is one whose process is gone from this very
host (a run killed here and started again at once need not wait), and one of this process's
own earlier runs (a failed release: storage was down when that run ended)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from fer_ray import storage
from fer_ray.config import RetryConfig
from fer_ray.logs import say

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"
CONFIRM_S = 0.4     # how long a written lease must stay ours, on the first try, before the run counts it held
HEARTBEAT_S = 15.0  # how often the holder rewrites it
EXPIRES_S = 120.0   # a lease not rewritten for this long is stale (clocks of other hosts may drift)
ATTEMPTS = 4        # tries at taking a free lease, each waiting twice as long as the one before


# Tokens of the leases this process holds now: a lease of this very process that is not among
# them was left by one of its earlier runs whose release failed (storage down at its end).
_HELD_HERE: set[str] = set()


class OutputBusy(RuntimeError):
    """Another run holds the output's lease."""


@dataclass
class Holder:
    """Who holds a lease: what the lease file says."""
    job: str
    run: str
    host: str
    machine: str  # this_machine(): where `pid` means this process
    pid: int
    process_started: str  # the process's start in the kernel's clock ticks, "" where unknown
    token: str
    since: float
    heartbeat: float

    @classmethod
    def this_process(cls, job: str, run: str) -> Holder:
        now = time.time()
        return cls(job, run, socket.gethostname(), this_machine(), os.getpid(), process_start(os.getpid()),
                   uuid.uuid4().hex, now, now)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=1).encode()

    def is_stale(self, now: float) -> bool:
        if now - self.heartbeat > EXPIRES_S:
            return True
        if self.machine != this_machine():
            return False
        if self.pid == os.getpid():
            return self.token not in _HELD_HERE
        return not process_alive(self.pid, self.process_started)

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return (f"{self.job} run {self.run}, process {self.pid} on {self.host} since {started}, "
                f"seen {max(0, round(now - self.heartbeat))} s ago")


@dataclass
class OutputLease:
    output: str
    holder: Holder
    retry: RetryConfig
    # The lease made the output's folder: a run that ends with nothing staged (a configuration
    # error found after the plan, such as a cluster that does not answer) leaves no empty folder.
    made_output: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _beating: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return lease_uri(self.output)

    def start_heartbeat(self) -> None:
        self._beating = threading.Thread(target=self._beat, name="fer-ray-lease", daemon=True)
        self._beating.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = read_holder(self.output, self.retry)
                if current is not None and current.token != self.holder.token:
                    log.warning("the lease on %s was taken over; this run will not commit", self.output)
                    return  # never write over the run that holds it now (a removed lease file is written again)
                self.holder.heartbeat = time.time()
                storage.write_bytes(self.uri, self.holder.to_json(), self.retry)
            except (storage.StorageUnavailable, OSError) as err:  # the run decides at its commit
                log.warning("could not renew the lease on %s: %s", self.output, err)

    def check_held(self) -> None:
        """Raise OutputBusy if another run has taken the lease over (checked before a commit).
        A lease file removed by hand takes nothing from this run."""
        current = read_holder(self.output, self.retry)
        if current is not None and current.token != self.holder.token:
            raise OutputBusy(f"{self.output}: this run lost the output's lease (its file removed, or not renewed "
                             f"for {EXPIRES_S:.0f} s); it is now held by {current.describe(time.time())}; "
                             f"nothing was published")

    def release(self) -> None:
        _HELD_HERE.discard(self.holder.token)
        self._stop.set()
        if self._beating is not None:
            self._beating.join()
        try:
            current = read_holder(self.output, self.retry)
            if current is not None and current.token == self.holder.token:
                storage.remove_file(self.uri, self.retry)
            if self.made_output:
                storage.remove_if_empty(self.output, self.retry)
        except (storage.StorageUnavailable, OSError) as err:  # it expires on its own
            log.warning("could not release the lease on %s (it expires in %.0f s): %s", self.output, EXPIRES_S, err)


def lease_uri(output: str) -> str:
    return storage.join(output, LEASE_FILE)


def read_holder(output: str, retry: RetryConfig | None = None) -> Holder | None:
    """The lease's holder; None when nobody holds it (or its file is not one we can read)."""
    try:
        return Holder(**json.loads(storage.read_bytes(lease_uri(output), retry)))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        log.warning("ignoring an unreadable lease on %s: %s", output, err)
        return None


def acquire_lease(output: str, job: str, run: str, retry: RetryConfig) -> OutputLease:
    """Take the output's lease for this process, or raise OutputBusy naming its holder."""
    mine = Holder.this_process(job, run)
    made_output = not storage.exists(output, retry)
    for attempt in range(ATTEMPTS):
        wait = CONFIRM_S * 2 ** attempt
        checked = time.monotonic()
        current = read_holder(output, retry)
        now = time.time()
        if current is not None and current.token != mine.token:
            if not current.is_stale(now):
                raise OutputBusy(f"another run is writing into this output (one at a time): wait for it to end or "
                                 f"give another output; it is {current.describe(now)}")
            say(f"{output}: taking over the lease of {current.describe(now)}, which has ended")
        mine.since = mine.heartbeat = time.time()
        storage.write_bytes(lease_uri(output), mine.to_json(), retry)
        took = time.monotonic() - checked
        time.sleep(wait)
        confirmed = read_holder(output, retry)
        if confirmed is None or confirmed.token != mine.token:
            continue  # another run wrote after ours: the next read names it
        if took <= wait / 2:
            lease = OutputLease(output, mine, retry, made_output)
            _HELD_HERE.add(mine.token)
            lease.start_heartbeat()
            return lease
        log.info("%s: the lease's read and write took %.2f s, more than half the %.1f s wait; trying again",
                 output, took, wait)
    OutputLease(output, mine, retry, made_output).release()
    raise OutputBusy(f"{output}: could not take the output's lease in {ATTEMPTS} tries (storage too slow, or "
                     f"another run taking it); try again")


def this_machine() -> str:
    """Where a pid names one process: the host's name, its boot and the pid namespace (a
    container's own, or the machine's), as far as the system tells them."""
    parts = [socket.gethostname()]
    for read in (lambda: pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    return "/".join(parts)


@contextlib.contextmanager
def held(output: str, job: str, run: str, retry: RetryConfig | None = None) -> Iterator[OutputLease]:
    """The output's lease for the block (acquire_lease), released however the block ends."""
    lease = acquire_lease(output, job, run, retry or RetryConfig())
    try:
        yield lease
    finally:
        lease.release()


def process_start(pid: int) -> str:
    """When the process started (Linux: /proc's start time in clock ticks), to tell a reused
    pid from the lease's process; "" where the system does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return "" if fields[0] == b"Z" else fields[19].decode()  # state; starttime (field 22)
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, started: str) -> bool:
    """Whether the lease's process still runs on this host (a zombie, or another process
    that now has its pid, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    if not started:
        return True  # the holder's system gave no start time: the pid answering is all we know
    return process_start(pid) == started
