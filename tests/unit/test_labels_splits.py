from __future__ import annotations

import dataclasses

import pytest

from fer_ray import labels
from fer_ray.config import SplitConfig
from fer_ray.datasets.common import assign_splits
from fer_ray.datasets.jaffe import parse_name


def test_mixed_index_follows_seed_000():
    assert labels.mixed_index("anger", "disgust") == 0
    assert labels.mixed_index("disgust", "anger") == 6
    assert labels.mixed_index("surprise", "sad") == 41
    assert all(labels.mixed_index(*labels.mixed_pair(i)) == i for i in range(42))


def test_dataset_codings_map_to_canonical():
    assert labels.CANONICAL[labels.CANONICAL_INDEX[labels.FER2013[6]]] == "neutral"
    assert labels.canonical_from_name("Happiness") == labels.CANONICAL_INDEX["happy"]
    assert labels.canonical_from_name("misc") == labels.UNKNOWN
    assert parse_name("KA.AN1.39.tiff") == ("KA", labels.CANONICAL_INDEX["anger"], "")
    assert parse_name("KA.XX1.39.tiff")[2] and parse_name("junk.tiff")[2]


@pytest.mark.parametrize("n_subjects", [3, 10, 57])
def test_subject_split_is_disjoint_complete_and_deterministic(n_subjects):
    subjects = [f"S{i:03d}" for i in range(n_subjects)]
    cfg = SplitConfig(train=0.7, val=0.15, test=0.15, seed=3)
    split = assign_splits(subjects, cfg)
    assert split == assign_splits(reversed(subjects), cfg)
    assert set(split) == set(subjects)
    assert {"train", "val", "test"} <= set(split.values())
    # only the seed changes: the fractions stay those of cfg
    assert assign_splits(subjects, dataclasses.replace(cfg, seed=4)) != split or n_subjects < 5
