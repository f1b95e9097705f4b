"""Subject folds: `fer-ray train --folds K`, the protocol of small datasets of a few people
(CK+ 10-fold, JAFFE leave-one-subject-out).

The subjects of the data (every row with a subject, whatever split the preprocess gave it)
are shuffled with the config's seed and dealt into K groups. Fold k tests on group k,
validates (chooses its best epoch) on group k+1 (mod K) and trains on the others, so every
subject is tested exactly once and no person is in two splits of a fold. Each fold is one
`trainer.run` (the same Ray Train run as `fer-ray train`) into OUTPUT/fold-<k>/, launched
from a small Ray task, as many at once as the cluster holds (the sweep's fitting), the
others when those finish. OUTPUT/folds.json holds each fold's subjects and test figures and
their mean and standard deviation.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time

import numpy as np
import ray

from fer_ray import config, lease, runtime, storage
from fer_ray.config import ConfigError, TrainConfig
from fer_ray.runtime import start_ray
from fer_ray.training import data, trainer

FOLD_TASK_CPUS = 0.01  # a fold's task only waits on its Ray Train controller (as a Tune trial)
SUMMARY = "folds.json"
FIGURES = ("macro_f1", "accuracy")


def subject_groups(subjects: list[str], folds: int, seed: int) -> list[list[str]]:
    """The subjects shuffled (seeded) and dealt into `folds` groups of near-equal size."""
    ordered = sorted(set(subjects))
    np.random.default_rng(seed).shuffle(ordered)
    return [sorted(ordered[k::folds]) for k in range(folds)]


def fold_splits(groups: list[list[str]], fold: int) -> dict[str, str]:
    """subject -> split in fold `fold`: its group tests, the next one validates, the rest train."""
    roles = {fold: "test", (fold + 1) % len(groups): "val"}
    return {subject: roles.get(index, "train") for index, group in enumerate(groups) for subject in group}


def fold_config(cfg: TrainConfig, fold: int) -> TrainConfig:
    return dataclasses.replace(cfg, folds=0, output=storage.join(cfg.output, f"fold-{fold}"),
                               train_split="train", val_split="val", test_split="test")


def check(cfg: TrainConfig) -> list[list[str]]:
    """The config, and every fold against the data (each split has rows of the label set),
    before any Ray work; returns the subject groups."""
    trainer.absolute_paths(cfg)
    cfg.validate()
    subjects = data.subjects(cfg)
    if len(subjects) < cfg.folds:
        found = f"{len(subjects)} subjects" if subjects else "no subjects (its layout records none)"
        advice = f"use at most --folds {len(subjects)} (leave-one-subject-out)" if len(subjects) >= 3 else (
            "use its fixed split (--folds 0)")
        raise ConfigError(f"folds: {cfg.folds}, but the data at {cfg.data} has {found}; {advice}")
    groups = subject_groups(subjects, cfg.folds, cfg.seed)
    for fold in range(cfg.folds):
        try:
            trainer.check(fold_config(cfg, fold), fold_splits(groups, fold))
        except ConfigError as err:
            raise ConfigError(f"folds: fold {fold} of {cfg.folds}: {err}") from None
    return groups


@ray.remote(num_cpus=FOLD_TASK_CPUS, max_retries=0)
def train_fold(cfg_dict: dict, subject_splits: dict[str, str]) -> dict:
    cfg = TrainConfig()
    config.apply_dict(cfg, cfg_dict)
    return trainer.run(cfg, trial_cpus=FOLD_TASK_CPUS, subject_splits=subject_splits, progress=False)


def train(cfg: TrainConfig) -> dict:
    """What `fer-ray train` and `fer_ray.train` do: the subject folds' summary when cfg.folds
    is above 1, else the test report of one run on the data's fixed split."""
    trainer.absolute_paths(cfg)
    cfg.validate()  # an output named, before its lease is taken
    with lease.held(cfg.output, "train", cfg.model):  # one run per output at a time, as for the jobs
        return run(cfg) if cfg.folds > 1 else trainer.run(cfg)


def run(cfg: TrainConfig) -> dict:
    """Train every fold, write OUTPUT/folds.json; returns that summary."""
    groups = check(cfg)
    start_ray()
    capacity = runtime.cluster_capacity()
    trainer.fit_to_cluster(cfg, capacity, FOLD_TASK_CPUS)  # ConfigError if even one fold cannot be placed
    at_once = runtime.trials_at_once(cfg.workers, cfg.cpus_per_worker, cfg.gpu, capacity, FOLD_TASK_CPUS)
    started = time.time()
    reports = run_folds(cfg, groups, at_once)
    summary = {**summarise(cfg, groups, reports, at_once), "wall_s": round(time.time() - started, 1)}
    storage.write_bytes(storage.join(cfg.output, SUMMARY), json.dumps(summary, indent=2).encode())
    return summary


def run_folds(cfg: TrainConfig, groups: list[list[str]], at_once: int) -> list[dict]:
    """Each fold's test report, in fold order; at most `at_once` folds train at a time."""
    waiting, running, reports = list(range(cfg.folds)), {}, {}
    while waiting or running:
        while waiting and len(running) < at_once:
            fold = waiting.pop(0)
            task = train_fold.remote(config.to_dict(fold_config(cfg, fold)), fold_splits(groups, fold))
            running[task] = fold
        done, _ = ray.wait(list(running), num_returns=1)
        fold = running.pop(done[0])
        reports[fold] = ray.get(done[0])  # a failed fold fails the run (rerun resumes from its checkpoints)
        print(f"train: {len(reports)}/{cfg.folds} folds done; fold {fold}: macro_f1={reports[fold]['macro_f1']:.3f}",
              flush=True)
    return [reports[fold] for fold in range(cfg.folds)]


def summarise(cfg: TrainConfig, groups: list[list[str]], reports: list[dict], at_once: int) -> dict:
    folds = [{"fold": k, "output": report["output"], "test_subjects": groups[k],
              "val_subjects": groups[(k + 1) % len(groups)], "test_samples": int(np.sum(report["confusion"])),
              **{name: report[name] for name in FIGURES}} for k, report in enumerate(reports)]
    spread = {name: {"mean": statistics.fmean(f[name] for f in folds),
                     "std": statistics.stdev(f[name] for f in folds)} for name in FIGURES}
    return {"model": cfg.model, "data": cfg.data, "output": cfg.output, "folds": cfg.folds,
            "folds_at_once": at_once, "seed": cfg.seed, "test": spread, "per_fold": folds}


def summary_lines(summary: dict) -> list[str]:
    """What `fer-ray train --folds K` prints: one line per fold, then the mean and its spread."""
    lines = [f"\n{summary['model']}: {summary['folds']} subject folds ({summary['folds_at_once']} at once, "
             f"{summary['wall_s']:.0f} s)"]
    for fold in summary["per_fold"]:
        lines.append(f"  fold {fold['fold']}: test {len(fold['test_subjects'])} subjects, {fold['test_samples']} "
                     f"samples: macro_f1={fold['macro_f1']:.3f} accuracy={fold['accuracy']:.3f}  {fold['output']}")
    test = summary["test"]
    lines.append(f"  mean: macro_f1={test['macro_f1']['mean']:.3f} +- {test['macro_f1']['std']:.3f} "
                 f"accuracy={test['accuracy']['mean']:.3f} +- {test['accuracy']['std']:.3f} (std over folds)")
    lines.append(f"  {SUMMARY}: {storage.join(summary['output'], SUMMARY)}")
    return lines
