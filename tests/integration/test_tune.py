"""A 2-trial Ray Tune sweep over two families, each trial a Ray Train run: interrupted by
killing its driver mid-sweep (once a trial has a checkpoint), then resumed to the end."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from fer_ray import cli, config, storage
from fer_ray.config import TrainConfig, TuneConfig
from fer_ray.models import get_spec
from fer_ray.training import sweep
from tests.browser import check_page
from tests.cluster import wait_for

pytestmark = pytest.mark.integration


def read_results(output: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(storage.join(output, "results.csv"))))


def interrupted_sweep(cfg: TuneConfig, address: str) -> set[str]:
    """Start `fer-ray tune` as its own driver, kill it once Tune has saved its state and a
    trial has a checkpoint; returns the trial ids that had started."""
    options = {**{name: getattr(cfg, name) for name in ("models", "trials", "grace_period", "batch_sizes",
                                                        "search_seed", "max_concurrent")},
               **{name: getattr(cfg.train, name) for name in ("data", "output", "epochs", "workers",
                                                              "cpus_per_worker")}}
    driver = subprocess.Popen([sys.executable, "-m", "fer_ray.cli", "tune", *cli.flags(options)],
                              env={**os.environ, "RAY_ADDRESS": address},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials, state = storage.join(cfg.train.output, "trials"), storage.join(cfg.train.output, sweep.EXPERIMENT)
    deadline = time.time() + 400
    while time.time() < deadline and driver.poll() is None:
        saved = storage.exists(state) and any("experiment_state" in u for u in storage.list_files(state))
        if saved and storage.exists(trials) and any(u.endswith("checkpoint.pt") for u in storage.list_files(trials)):
            break
        time.sleep(0.5)
    assert driver.poll() is None, "the sweep finished before it could be interrupted"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    return {u.split("/trials/")[1].split("/")[0] for u in storage.list_files(trials)}


def test_interrupted_sweep_resumes_and_writes_results_best_config_and_plot(fer_shards, bucket, ray_cluster,
                                                                           tmp_path):
    train = TrainConfig(data=fer_shards, output=f"{bucket}/sweeps/a", epochs=2, workers=1, cpus_per_worker=0.5)
    # one trial at a time: on 2 CPUs two concurrent Ray Train runs only slow each other down
    cfg = TuneConfig(models="dexpression_fer,landmark_mlp", trials=2, grace_period=1, batch_sizes="16,32",
                     search_seed=3, max_concurrent=1, train=train)
    started = interrupted_sweep(cfg, ray_cluster.address)
    assert not storage.exists(storage.join(cfg.train.output, "results.csv"))

    summary = sweep.run(cfg)  # restores Tune's experiment and finishes it
    results = read_results(cfg.train.output)
    assert len(results) == 2 and set(results["status"]) == {"ok"}
    assert started <= set(results["trial"])  # the interrupted trials were continued, not replaced
    assert (results["epochs_run"] >= 1).all()
    assert results["best_val_macro_f1"].is_monotonic_decreasing  # best first
    defaults = results["model"].map(lambda name: get_spec(name).default_lr)  # no bounds: each family's own range
    assert results["lr"].between(defaults / sweep.LR_SPAN, defaults * sweep.LR_SPAN).all()
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
    page = check_page(cfg.train.output, tmp_path, ["Trials plot", "Trials", "Best config"], sort_by="best_val_macro_f1")
    # what the page's script did: ascending (stable, from the file's order), trials without a score last
    scores = dict(zip(results["trial"], results["best_val_macro_f1"]))
    assert page.sorted_rows == sorted(results["trial"], key=lambda t: (pd.isna(scores[t]), scores[t]))


def test_trial_data_is_read_while_placement_groups_leave_less_than_one_free_cpu(fer_shards):
    """Tune trials' placement groups (with a stopped trial's not yet released) can leave less
    than one CPU free; a trial's data must still be read then. Ray Data's read_parquet and
    its default map tasks need a whole CPU each, and the demo's sweep waited forever for one."""
    import threading

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from fer_ray.training import data

    cfg = TrainConfig(data=fer_shards, output="/unused")
    info = data.scan(cfg)
    held = placement_group([{"CPU": round(ray.available_resources()["CPU"] - 0.99, 4)}])
    ray.get(held.ready(), timeout=60)
    seen = {}

    def read():  # what a trial does before training: the split's normalisation, then its rows
        try:
            train = data.read_split(info, "canonical8", "train")
            seen["norm"] = data.normalisation(train, info.face_shape)
            seen["rows"] = sum(len(batch["label"]) for batch in train.iter_batches(batch_format="numpy"))
        except Exception as err:  # shown by the assertion below
            seen["error"] = err

    try:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(180)
        assert "rows" in seen, seen.get("error", "the split was not read within 180 s")
        assert seen["rows"] == sum(info.counts["train"]) > 0
        assert len(seen["norm"]["mean"]) == 1
    finally:
        remove_placement_group(held)


def test_ctrl_c_stops_a_sweep_once_tune_saved_it_and_works_after_one(ray_cluster, tmp_path):
    """Tune answers Ctrl-C by saving its state and returning as if the sweep were done, and
    leaves its handler installed after a sweep that ended; around fit(),
    sweep.ctrl_c_stops_the_sweep makes the first a KeyboardInterrupt (the CLI exits 130)
    rather than results written up from trials that never ended, and gives Ctrl-C back after
    the second. A trivial trainable stands for the trials: Tune's handling is what is tested."""
    from ray import tune

    started = tmp_path / "started"

    def slow_trial(config):
        started.touch()  # the trial actor runs on this machine
        time.sleep(300)

    def quick_trial(config):
        tune.report({"score": 1.0})

    def tuner(trainable, name):
        return tune.Tuner(tune.with_resources(trainable, {"CPU": 0.1}), tune_config=tune.TuneConfig(num_samples=2),
                          run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0))

    def ctrl_c_once_a_trial_runs():
        wait_for(started.exists, 120, "a trial to start")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_a_trial_runs, daemon=True).start()
    with pytest.raises(KeyboardInterrupt, match="Tune saved the sweep"), sweep.ctrl_c_stops_the_sweep():
        tuner(slow_trial, "stopped").fit()

    with sweep.ctrl_c_stops_the_sweep():
        done = tuner(quick_trial, "ended").fit()
    assert done.num_terminated == 2
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
