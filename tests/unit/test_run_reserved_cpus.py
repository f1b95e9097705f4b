"""A resumed run leaves Ray's checkpoint reading a CPU however many inputs it counted as
committed when planned (a failed attempt's last write can commit after that)."""
from __future__ import annotations

import pytest

from fer_ray.config import RetryConfig
from fer_ray.pipelines.runs import CHECKPOINT_FILTER_CPUS, NEW, RESTARTED, RESUMED, StagedRun


@pytest.mark.parametrize("state, units_skipped, reserved", [
    (RESUMED, 0, CHECKPOINT_FILTER_CPUS),
    (RESUMED, 12, CHECKPOINT_FILTER_CPUS),
    (NEW, 0, 0),
    (RESTARTED, 0, 0),
])
def test_only_a_resumed_run_reserves_the_checkpoint_cpu(state, units_skipped, reserved):
    run = StagedRun("preprocess", "/tmp/out", "abc", state, {}, RetryConfig(), units_skipped=units_skipped)
    assert run.reserved_cpus == reserved
