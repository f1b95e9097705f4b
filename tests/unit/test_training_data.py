"""Training data helpers and configs, without Ray: label-set mapping, class weights,
row -> array conversion, normalisation batches, the train/tune config checks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fer_ray import config
from fer_ray.config import ConfigError, TrainConfig, TuneConfig
from fer_ray.labels import BASIC7, CANONICAL, LABEL_SETS
from fer_ray.models import get_spec
from fer_ray.models.inputs import Batcher
from fer_ray.training.data import DataInfo, label_lookup, pixel_moments, to_arrays, to_label_set
from fer_ray.training.loop import cosine_lr


def test_basic7_drops_contempt_and_keeps_names():
    lookup = label_lookup("basic7")
    for canonical_index, name in enumerate(CANONICAL):
        if name == "contempt":
            assert lookup[canonical_index] == -1
        else:
            assert BASIC7[lookup[canonical_index]] == name


def test_to_label_set_maps_unknown_and_out_of_range_to_minus_one():
    labels = np.array([-1, 0, 7, 8, 3])
    assert to_label_set(labels, "canonical8").tolist() == [-1, 0, 7, -1, 3]
    assert to_label_set(labels, "basic7").tolist() == [-1, BASIC7.index("neutral"), -1, -1,
                                                        BASIC7.index("surprise")]
    assert to_label_set(np.array([0, 41, 42, -1]), "mixed42").tolist() == [0, 41, -1, -1]


def test_class_weights_are_inverse_frequency_and_zero_for_unseen():
    info = DataInfo([], LABEL_SETS["basic7"], {"train": [10, 30, 0, 20, 20, 10, 10]}, (48, 48, 1))
    weights = np.array(info.class_weights("train"))
    counts = np.array(info.counts["train"])
    assert weights[2] == 0
    seen = counts > 0
    assert np.allclose(weights[seen] * counts[seen], (weights[seen] * counts[seen])[0])  # equal total weight
    assert np.isclose((weights * counts).sum(), counts.sum())  # the loss scale is unchanged


def face_rows(labels, side=4, channels=1):
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, side * side * channels, dtype=np.uint8) for _ in labels]
    batch = {
        "face": np.array([f.tobytes() for f in faces], dtype=object),
        "face_shape": np.array([[side, side, channels]] * len(labels)),
        "landmarks": np.stack([np.arange(136, dtype=np.float32) + i for i in range(len(labels))]),
        "label": np.array(labels, dtype=np.int16),
    }
    return batch, faces


def test_to_arrays_decodes_faces_channels_first_and_drops_rows_outside_the_label_set():
    contempt = CANONICAL.index("contempt")
    batch, faces = face_rows([1, contempt, 6, -1], side=4, channels=3)
    out = to_arrays(batch, "basic7")
    assert out["image"].shape == (2, 3, 4, 4) and out["image"].dtype == np.uint8
    assert np.array_equal(out["image"][1], faces[2].reshape(4, 4, 3).transpose(2, 0, 1))
    assert out["landmarks"].shape == (2, 68, 2) and out["landmarks"][1, 0, 0] == 2  # row 2's first x
    assert out["label"].tolist() == [BASIC7.index("happy"), BASIC7.index("anger")]


def test_pixel_moments_sum_to_numpy_mean_and_std():
    images = np.random.default_rng(1).integers(0, 256, (5, 1, 3, 3)).astype(np.uint8)
    halves = [pixel_moments({"image": images[:2]}), pixel_moments({"image": images[2:]})]
    n = sum(h["n"][0] for h in halves)
    mean = sum(h["sum"][0] for h in halves) / n
    var = sum(h["sumsq"][0] for h in halves) / n - mean ** 2
    assert np.allclose(mean, images.reshape(5, -1).mean(0))
    assert np.allclose(np.sqrt(var), images.reshape(5, -1).std(0))


def test_batcher_standardises_images_and_orders_inputs_like_the_spec():
    spec = get_spec("vgg_landmarks")
    norm = {"mean": np.full((1, 48, 48), 100, np.float32), "std": np.full((1, 48, 48), 50, np.float32)}
    batcher = Batcher(spec, norm, torch.device("cpu"), 48)
    batch = {"image": torch.full((2, 1, 48, 48), 150, dtype=torch.uint8), "landmarks": torch.ones(2, 68, 2)}
    image, landmarks = batcher.inputs(batch)
    assert torch.allclose(image, torch.ones_like(image)) and landmarks.shape == (2, 68, 2)
    only_points = Batcher(get_spec("landmark_mlp"), {}, torch.device("cpu"), 48).inputs(batch)
    assert len(only_points) == 1 and only_points[0].shape == (2, 68, 2)


def test_cosine_schedule_starts_at_lr_and_decays():
    values = [cosine_lr(0.1, epoch, 10) for epoch in range(10)]
    assert values[0] == 0.1 and all(a > b for a, b in zip(values, values[1:])) and values[-1] > 0


@pytest.mark.parametrize("fields, message", [
    ({"model": "vgg16"}, "vgg16.*choose one of: baseline_cnn"),
    ({"lr": -1e-3}, "lr: -0.001 must be > 0"),
    ({"label_set": "basic6"}, "label_set: 'basic6' is not valid"),
    ({"dropout": 1.5}, "dropout: 1.5 must be < 1"),
    ({"cache": "maybe"}, "cache: 'maybe' is not valid; choose one of: auto, on, off"),
    ({"placement": "STRICT_SPREAD"}, "placement: 'STRICT_SPREAD' is not valid; choose one of: pack, spread"),
    ({"val_split": "dev"}, "val_split: 'dev' is not valid"),
    ({"clip_length": 12}, "clip_length: 12 is for clip families .*c3d.*leave it 0"),
    ({"model": "c3d", "fc_size": -1}, "fc_size: -1 must be a whole number >= 0"),
    ({"data": ""}, "data: required"),
])
def test_train_config_errors_name_the_field(fields, message):
    cfg = dataclasses.replace(TrainConfig(data="x", output="y"), **fields)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@pytest.mark.parametrize("fields, message", [
    ({"models": "dexpression_fer,nope"}, "'nope' is not a registered family"),
    ({"lr_min": 1.0, "lr_max": 0.1}, "lr_min: 1.0 is above lr_max"),
    ({"lr_min": 1e-3}, r"lr_min/lr_max: 0.001, 0.0; give both bounds, or neither \(0 and 0: from a tenth to ten "
                       r"times each family's default rate\)"),
    ({"lr_min": -1.0, "lr_max": 0.1}, "lr_min: -1.0 must be > 0"),
    ({"batch_sizes": "32,x"}, "batch_sizes: '32,x' must be comma-separated integers"),
    ({"trials": 0}, "trials: 0 must be > 0"),
])
def test_tune_config_errors_name_the_field(fields, message):
    cfg = dataclasses.replace(TuneConfig(train=TrainConfig(data="x", output="y")), **fields)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_a_sweep_without_lr_bounds_samples_each_familys_rate_by_its_default():
    """c3d (1e-4) and dexpression_fer (1e-3) each get a tenth to ten times their own default;
    bounds, when given, are one range for every family, as they say."""
    from fer_ray.training import sweep

    cfg = TuneConfig(models="c3d,dexpression_fer", train=TrainConfig(data="x", output="y"))
    cfg.validate()
    space = sweep.search_space(cfg)
    assert "lr" not in space and (space[sweep.LR_FACTOR].lower, space[sweep.LR_FACTOR].upper) == (0.1, 10.0)
    sampled = {"weight_decay": 1e-4, "batch_size": 32, "dropout": 0.2, "augment": 1.0, sweep.LR_FACTOR: 0.5}
    for model, rate in (("c3d", 5e-5), ("dexpression_fer", 5e-4)):
        params = sweep.searched({**sampled, "model": model})
        assert list(params) == list(sweep.SEARCHED) and params["lr"] == pytest.approx(rate)
        assert sweep.trial_config(config.to_dict(cfg.train), {**sampled, "model": model}, "z").lr == pytest.approx(rate)
    bounded = dataclasses.replace(cfg, lr_min=1e-5, lr_max=1e-3)
    bounded.validate()
    space = sweep.search_space(bounded)
    assert sweep.LR_FACTOR not in space and (space["lr"].lower, space["lr"].upper) == (1e-5, 1e-3)
    unscaled = {name: value for name, value in sampled.items() if name != sweep.LR_FACTOR}
    assert sweep.searched({**unscaled, "model": "c3d", "lr": 3e-4})["lr"] == 3e-4
