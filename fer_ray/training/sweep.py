"""Ray Tune sweep over TrainConfig fields; each trial is a whole Ray Train run.

Following Ray's Train+Tune guide: the Tune trainable is a small driver function that
builds its own TorchTrainer (through `trainer.run`, the same code as `fer-ray train`)
and forwards each epoch's report to Tune with `TuneReportCallback`. ASHA stops weak
trials on validation macro-F1. Outputs under the sweep's output URI:
  results.csv, best_config.yaml, trials.png, tune/ (Tune's state), trials/<trial id>/ (runs)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal

import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from fer_ray import config, lease, reports, runtime, storage
from fer_ray.config import LR_SPAN, TrainConfig, TuneConfig, model_spec
from fer_ray.runtime import start_ray
from fer_ray.training import trainer
from fer_ray.training.metrics import trials_png

EXPERIMENT = "tune"
SEARCHED = ("model", "lr", "weight_decay", "batch_size", "dropout", "augment")
TRIAL_CPUS = 0.01  # the trial's driver only waits on its Ray Train controller
# Without lr bounds a trial samples this factor of its family's default rate (config.LR_SPAN):
# one range for all families would put c3d (diverging at 1e-3) and dexpression_fer (1e-3) in
# the same place.
LR_FACTOR = "lr_factor"


def search_space(cfg: TuneConfig) -> dict:
    """Distributions keyed by TrainConfig field names (the CLI's and YAML's names), but for
    LR_FACTOR where the rate follows each family's default."""
    rate = ({LR_FACTOR: tune.loguniform(1 / LR_SPAN, LR_SPAN)} if cfg.lr_follows_family
            else {"lr": tune.loguniform(cfg.lr_min, cfg.lr_max)})
    return {
        "model": tune.choice(cfg.model_list),
        **rate,
        "weight_decay": tune.loguniform(cfg.weight_decay_min, cfg.weight_decay_max),
        "batch_size": tune.choice(cfg.batch_size_list),
        "dropout": tune.uniform(cfg.dropout_min, cfg.dropout_max),
        "augment": tune.uniform(cfg.augment_min, cfg.augment_max),
    }


def searched(params: dict) -> dict:
    """The TrainConfig fields a trial's sampled values set (lr from LR_FACTOR where sampled)."""
    values = dict(params)
    if LR_FACTOR in params:
        values["lr"] = params[LR_FACTOR] * model_spec(params["model"]).default_lr
    return {name: values[name] for name in SEARCHED}


def trial_config(base: dict, params: dict, output: str) -> TrainConfig:
    cfg = TrainConfig()
    config.apply_dict(cfg, base)
    return trainer.with_fields(cfg, {**searched(params), "output": output})


def trial_output(sweep_output: str, trial_id: str) -> str:
    return storage.join(sweep_output, "trials", trial_id)


def run_trial(params: dict, base: dict) -> None:
    """One trial: train the sampled config into <sweep>/trials/<trial id>."""
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(base, params, trial_output(base["output"], trial_id))
    trainer.run(cfg, callbacks=(TuneReportCallback(),), test=False, trial_cpus=TRIAL_CPUS, progress=False)


def fit_to_cluster(cfg: TuneConfig, capacity: runtime.Capacity) -> int:
    """Resolve cfg.train.cpus_per_worker for trials that each hold TRIAL_CPUS beside their
    worker group (in place: every trial gets the resolved value), and return how many trials
    run at once; ConfigError when even one trial, or max_concurrent of them, cannot fit."""
    train = cfg.train
    trainer.fit_to_cluster(train, capacity, TRIAL_CPUS)
    return runtime.trials_at_once(train.workers, train.cpus_per_worker, train.gpu, capacity, TRIAL_CPUS,
                                  cfg.max_concurrent)


def check(cfg: TuneConfig) -> None:
    """Config values and the data (with every family) before any Ray work."""
    trainer.absolute_paths(cfg.train)
    cfg.validate()
    for name in cfg.model_list:
        trainer.check(dataclasses.replace(cfg.train, model=name))


def run(cfg: TuneConfig) -> dict:
    """Run the sweep into cfg.train.output, holding its lease (one run per output at a time)."""
    trainer.absolute_paths(cfg.train)
    cfg.validate()  # an output named, before its lease is taken
    with lease.held(cfg.train.output, "tune", ",".join(cfg.model_list)):
        return sweep(cfg)


def sweep(cfg: TuneConfig) -> dict:
    check(cfg)
    start_ray()
    at_once = fit_to_cluster(cfg, runtime.cluster_capacity())
    fs, path = storage.resolve(cfg.train.output)
    experiment = f"{path}/{EXPERIMENT}"
    # The base config travels as a parameter, not in the search space, so Tune's tables
    # and trial names show only what the sweep varies.
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=config.to_dict(cfg.train)),
                                    {"CPU": TRIAL_CPUS})
    if not cfg.train.resume:
        storage.remove_dir(storage.join(cfg.train.output, EXPERIMENT))
        storage.remove_dir(storage.join(cfg.train.output, "trials"))
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=fs)
    else:
        tuner = new_tuner(cfg, trainable, fs, path, at_once)
    with ctrl_c_stops_the_sweep():
        results = tuner.fit()
    return write_outputs(cfg, results)


@contextlib.contextmanager
def ctrl_c_stops_the_sweep():
    """Ctrl-C during a sweep ends in KeyboardInterrupt once Tune has saved the sweep (the CLI
    exits 130; the same command resumes it). Tune answers the first Ctrl-C by saving its state
    and returning from fit() as if the sweep were done, its unfinished trials marked terminated:
    `fer-ray tune` went on to write results (and a best config, once a trial had reported) from
    them, and exited 0, or 1 with a wrong failure when none had. After a sweep that ended, Tune
    also leaves its handlers installed, which swallow the next Ctrl-C. How the interruption is
    seen: Tune's handler, on a Ctrl-C, puts back the handler it found, here `interrupt`; after
    an uninterrupted sweep its own is still there."""
    if not runtime.in_main_thread():  # Tune catches nothing there
        yield
        return

    def interrupt(signum, frame):  # a second Ctrl-C, while Tune saves: stop at once
        raise KeyboardInterrupt

    with runtime.signal_handlers_kept(signal.SIGINT, signal.SIGUSR1):
        signal.signal(signal.SIGINT, interrupt)
        yield
        if not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0")) and signal.getsignal(signal.SIGINT) is interrupt:
            raise KeyboardInterrupt("Tune saved the sweep; the same command finishes it")


def new_tuner(cfg: TuneConfig, trainable, fs, path: str, at_once: int) -> tune.Tuner:
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=cfg.train.epochs,
                              grace_period=min(cfg.grace_period, cfg.train.epochs), reduction_factor=2)
    return tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=trainer.SCORE, mode="max", scheduler=scheduler, num_samples=cfg.trials,
            # BasicVariantGenerator bounds concurrency itself (Tune ignores
            # max_concurrent_trials for it)
            search_alg=BasicVariantGenerator(random_state=cfg.search_seed, max_concurrent=at_once),
        ),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=path, storage_filesystem=fs,
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  # Tune's trial tables print to the screen; quiet, one line per trial
                                  verbose=None if runtime.ray_output_shown() else 0,
                                  callbacks=[] if runtime.ray_output_shown() else [TrialLines(cfg.trials)]),
    )


class TrialLines(tune.Callback):
    """One line per finished trial, on the driver (Tune runs its callbacks there)."""

    def __init__(self, trials: int):
        self.trials, self.finished = trials, 0

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.finished += 1
        print(trial_line(self.finished, self.trials, searched(trial.config), trial.last_result or {}), flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.finished += 1
        print(f"tune: trial {self.finished}/{self.trials} failed: {searched_text(searched(trial.config))}",
              flush=True)


def trial_line(finished: int, trials: int, params: dict, result: dict) -> str:
    """`tune: trial 2/4 done: model=landmark_mlp lr=0.003 ...: val_macro_f1 0.52 after 10 epochs`."""
    score = result.get(trainer.SCORE)
    scored = f"{trainer.SCORE} {score:.3f}" if isinstance(score, (int, float)) else "no score"
    return (f"tune: trial {finished}/{trials} done: {searched_text(params)}: {scored} after "
            f"{result.get('training_iteration', 0)} epochs")


def searched_text(params: dict) -> str:
    return " ".join(f"{name}={params[name]:.3g}" if isinstance(params[name], float) else f"{name}={params[name]}"
                    for name in SEARCHED if name in params)


def trial_history(output: str, result) -> pd.DataFrame:
    """A trial's epochs. Its own metrics.json, written when its training finished, holds every
    one: Tune never heard of those done before the sweep was interrupted when the resumed trial
    had none left to run. Tune's record for a trial that failed or was stopped early."""
    metrics = storage.join(output, "metrics.json")
    if not result.error and storage.exists(metrics):
        return pd.DataFrame(json.loads(storage.read_bytes(metrics))["history"])
    return result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()


def write_outputs(cfg: TuneConfig, results) -> dict:
    """results.csv (one row per trial), best_config.yaml, trials.png; returns a summary."""
    rows, curves, labels = [], {}, {}
    for result in results:
        trial_id = result.metrics.get("trial_id") or result.path.rstrip("/").split("/")[-1]
        history = trial_history(trial_output(cfg.train.output, trial_id), result)
        params = searched(result.config)
        best = float(history[trainer.SCORE].max()) if trainer.SCORE in history else float("nan")
        rows.append({"trial": trial_id, **params, "epochs_run": len(history), f"best_{trainer.SCORE}": best,
                     "status": "error" if result.error else "ok"})
        curves[trial_id] = history.to_dict("records")
        labels[trial_id] = f"{params['model']} lr={params['lr']:.1e} bs={params['batch_size']}"
    table = pd.DataFrame(rows).sort_values(f"best_{trainer.SCORE}", ascending=False, na_position="last")
    output = cfg.train.output
    storage.write_bytes(storage.join(output, "results.csv"), table.to_csv(index=False).encode())
    if table[f"best_{trainer.SCORE}"].isna().all():
        errors = [str(result.error).strip().splitlines()[-1] for result in results if result.error]
        raise RuntimeError(f"tune: no trial reported {trainer.SCORE} (see {storage.join(output, 'results.csv')}); "
                           f"first error: {errors[0] if errors else 'none'}")
    storage.write_bytes(storage.join(output, "trials.png"), trials_png(curves, trainer.SCORE, labels))
    best_row = table.iloc[0].to_dict()
    best_cfg = trial_config(config.to_dict(cfg.train), best_row, storage.join(output, "best"))
    storage.write_bytes(storage.join(output, "best_config.yaml"), config.to_yaml(best_cfg).encode())
    reports.write_after_run(output)
    return {"trials": len(rows), "best": best_row, "output": output,
            "results_csv": storage.join(output, "results.csv"),
            "best_config": storage.join(output, "best_config.yaml"),
            "plot": storage.join(output, "trials.png")}
