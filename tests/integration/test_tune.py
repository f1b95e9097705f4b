"""A 2-trial Ray Tune sweep over two families, each trial a Ray Train run; then a resume."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from fer_ray import config, storage
from fer_ray.config import TrainConfig, TuneConfig
from fer_ray.training import sweep

pytestmark = pytest.mark.integration


def read_results(output: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(storage.join(output, "results.csv"))))


def test_two_trial_sweep_writes_results_best_config_and_plot(fer_shards, bucket):
    train = TrainConfig(data=fer_shards, output=f"{bucket}/sweeps/a", epochs=2, workers=1, cpus_per_worker=0.5)
    cfg = TuneConfig(models="dexpression_fer,landmark_mlp", trials=2, grace_period=1, batch_sizes="16,32",
                     search_seed=3, train=train)
    summary = sweep.run(cfg)

    results = read_results(cfg.train.output)
    assert len(results) == 2 and set(results["status"]) == {"ok"}
    assert results["best_val_macro_f1"].is_monotonic_decreasing  # best first
    assert results["lr"].between(cfg.lr_min, cfg.lr_max).all()
    assert set(results["batch_size"]) <= {16, 32}
    for trial in results["trial"]:
        assert storage.exists(storage.join(cfg.train.output, "trials", trial, "train"))

    best = TrainConfig()
    config.load_yaml(best, storage.read_bytes(summary["best_config"]).decode())
    best.validate()  # directly usable by `fer-ray train --config`
    top = results.iloc[0]
    assert (best.model, best.batch_size) == (top["model"], top["batch_size"])
    assert best.lr == pytest.approx(top["lr"]) and best.data == fer_shards
    assert storage.read_bytes(summary["plot"]).startswith(b"\x89PNG")

    again = sweep.run(cfg)  # the experiment is restored, not run anew
    assert again["trials"] == 2
    assert list(read_results(cfg.train.output)["trial"]) == list(results["trial"])
