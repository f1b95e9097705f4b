"""Results pages: `report.html` beside a job's outputs, one static self-contained file.

Every job writes it at the end of a successful run (after the commit, so a committed
output is never left half-written; a page that cannot be written is a warning, not a
failed run) and `fer-ray report OUTPUT` builds it again from the output alone.
"""
from __future__ import annotations

import logging

from fer_ray import storage
from fer_ray.reports.html import render
from fer_ray.reports.pages import NoResults, build

__all__ = ["PAGE_FILE", "NoResults", "write", "write_after_run"]

log = logging.getLogger(__name__)
PAGE_FILE = "report.html"


def write(output: str) -> str:
    """Build the page of `output` and write it there; its URI."""
    uri = storage.join(output, PAGE_FILE)
    storage.write_bytes(uri, render(build(output)).encode())
    return uri


def write_after_run(output: str) -> str:
    """`write`, for a run that has succeeded: a page that fails is logged, never raised, so
    the result the run committed stands. Its URI, '' when not written."""
    try:
        return write(output)
    except Exception:
        log.warning("the results page of %s was not written (the run's results are complete; "
                    "`fer-ray report %s` tries again)", output, output, exc_info=True)
        return ""
