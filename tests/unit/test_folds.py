"""Subject folds without Ray: how subjects are dealt into folds, and the folds field's checks."""
from __future__ import annotations

import pytest

from fer_ray import config
from fer_ray.config import ConfigError, TrainConfig, TuneConfig
from fer_ray.training.folds import fold_splits, subject_groups

SUBJECTS = [f"S{i:03d}" for i in range(23)]


@pytest.mark.parametrize("folds", [3, 10, 23])
def test_every_subject_is_tested_once_and_never_in_two_splits(folds):
    groups = subject_groups(SUBJECTS + SUBJECTS[:5], folds, seed=0)  # repeats count once
    assert sorted(s for group in groups for s in group) == SUBJECTS
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    tested = []
    for fold in range(folds):
        splits = fold_splits(groups, fold)
        assert sorted(splits) == SUBJECTS  # each subject in exactly one split of the fold
        by_split = {name: {s for s, v in splits.items() if v == name} for name in ("train", "val", "test")}
        assert all(by_split.values()) and by_split["test"] == set(groups[fold])
        tested += sorted(by_split["test"])
    assert sorted(tested) == SUBJECTS


def test_folds_depend_on_the_seed_only():
    assert subject_groups(SUBJECTS, 5, 1) == subject_groups(list(reversed(SUBJECTS)), 5, 1)
    assert subject_groups(SUBJECTS, 5, 1) != subject_groups(SUBJECTS, 5, 2)


@pytest.mark.parametrize("value", ["2", "-1", "true", "2.5"])
def test_bad_folds_fail_naming_the_field(value):
    cfg = TrainConfig(data="s3://b/d", output="s3://b/o")
    with pytest.raises(ConfigError, match=r"^folds: "):
        config.set_field(cfg, "folds", value)
        cfg.validate()


@pytest.mark.parametrize("value", [0, 1, 3, 10])
def test_fixed_split_or_three_folds_and_more_are_valid(value):
    TrainConfig(data="s3://b/d", output="s3://b/o", folds=value).validate()


def test_a_sweep_refuses_folds():
    cfg = TuneConfig(train=TrainConfig(data="s3://b/d", output="s3://b/o", folds=5))
    with pytest.raises(ConfigError, match=r"^folds: 5, but a sweep"):
        cfg.validate()


def test_a_single_run_refuses_folds_instead_of_ignoring_them(tmp_path):
    from fer_ray.training import trainer

    with pytest.raises(ConfigError, match=r"^folds: 3 subject folds are run by fer_ray.training.folds.run"):
        trainer.run(TrainConfig(data=str(tmp_path), output=str(tmp_path / "out"), folds=3))
    assert not (tmp_path / "out").exists()
