"""What a running job shows its user: inputs done of the total, their rate, the time left and
the counts by status so far.

The numbers come from the run itself, not from Ray: every write task commits a small counts
file beside its Parquet files (pipelines.writer), so a thread on the driver adds those up
every few seconds. That works the same on local files and S3, through `ray job submit`, and
for a resumed run (the inputs committed before count as done). The display moves when a
write task finishes, i.e. in steps of up to one output file's rows.

On a terminal the display is one live tqdm bar; elsewhere (CI, `ray job submit` logs) it
is a plain line every PLAIN_EVERY_S seconds, and one at the end.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

from tqdm import tqdm

log = logging.getLogger(__name__)

BAR_EVERY_S = 2.0
PLAIN_EVERY_S = 20.0


class Progress:
    """A context manager around a job's execution: `read_counts()` returns the run's counts so
    far ({"inputs": n, "status": {status: n}}, as pipelines.writer adds them up)."""

    def __init__(self, job: str, total: int | None, read_counts: Callable[[], dict], unit: str = "inputs",
                 stream=None, shown: bool = True):
        self.job, self.total, self.read_counts, self.unit, self.shown = job, total, read_counts, unit, shown
        self.stream = stream or sys.stdout
        self.live = _is_terminal(self.stream)
        self.started = time.monotonic()
        self.first_done = 0
        self.last_shown: tuple | None = None  # plain lines: nothing new, no line
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, name=f"{job}-progress", daemon=True)
        self.bar: tqdm | None = None

    def __enter__(self) -> "Progress":
        if not self.shown:
            return self
        # committed by an earlier attempt (a resumed run): done, but not part of this one's rate
        self.first_done = int(self._counts().get("inputs", 0))
        if self.live:
            self.bar = tqdm(total=self.total, desc=self.job, unit=f" {self.unit}", file=self.stream,
                            dynamic_ncols=True, leave=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.shown:
            return
        self.stop.set()
        self.thread.join()
        self._show(self._counts(), final=exc[0] is None)
        if self.bar is not None:
            self.bar.close()

    def _follow(self) -> None:
        every = BAR_EVERY_S if self.live else PLAIN_EVERY_S
        while not self.stop.wait(every):
            self._show(self._counts(), final=False)

    def _counts(self) -> dict:
        try:
            return self.read_counts()
        except Exception:  # progress is a view: a failed read of it never fails the job
            log.warning("progress of %s could not be read", self.job, exc_info=True)
            return {}

    def _show(self, counts: dict, final: bool) -> None:
        done = int(counts.get("inputs", 0))
        statuses = counts.get("status", {})
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(status_text(statuses), refresh=True)
        elif (counts or final) and (done, statuses) != self.last_shown:
            line = progress_line(self.job, done, self.total, done - self.first_done,
                                 time.monotonic() - self.started, statuses, self.unit)
            print(line, file=self.stream, flush=True)
            self.last_shown = (done, statuses)
        log.info("%s progress: %s %s done of %s; %s", self.job, done, self.unit, self.total, status_text(statuses))


def progress_line(job: str, done: int, total: int | None, done_here: int, elapsed_s: float, statuses: dict,
                  unit: str = "inputs") -> str:
    """`preprocess: 120/177 inputs (68%), 11.3/s, about 5 s left; ok=118 no_face=2`."""
    rate = done_here / elapsed_s if elapsed_s > 0 else 0.0
    speed = f"{rate:.1f}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.0f} s each"
    of = f"/{total}" if total else ""
    share = f" ({100 * done // total}%)" if total else ""
    left = ""
    if total and rate > 0 and done < total:
        left = f", about {format_duration((total - done) / rate)} left"
    status = f"; {status_text(statuses)}" if statuses else ""
    return f"{job}: {done}{of} {unit}{share}, {speed}{left}{status}"


def status_text(counts: dict) -> str:
    """`no_face=2, ok=175`."""
    return ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
