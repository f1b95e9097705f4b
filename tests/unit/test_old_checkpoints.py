"""Weights saved by an earlier version of a family (here baseline_cnn before its convolutions
had BatchNorm) are refused before any work, in one line that says how they differ and what
to do: by the commands that read a checkpoint, and by a training run asked to resume them."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from fer_ray import cli, config
from fer_ray.config import ConfigError, TrainConfig
from fer_ray.labels import LABEL_SETS
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model, get_spec
from fer_ray.training import trainer
from fer_ray.training.data import DataInfo

CLASSES = LABEL_SETS[get_spec("baseline_cnn").label_set]


class BaselineCnnBeforeBatchNorm(nn.Module):
    """baseline_cnn as it was: each 3x3 convolution with a bias, then ReLU, no BatchNorm."""

    def __init__(self, num_classes: int):
        super().__init__()
        layers, in_channels = [], 3
        for i, out_channels in enumerate((12, 12, 24, 24, 24)):
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [nn.MaxPool2d(2)] if i < 4 else []
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(14 * 14 * 24, num_classes))


@pytest.fixture
def old_run(tmp_path) -> tuple[str, TrainConfig]:
    """A run directory holding a baseline_cnn checkpoint with the earlier version's weights."""
    cfg = TrainConfig(model="baseline_cnn", output=str(tmp_path / "run"))
    norm = {"mean": np.zeros((3, 224, 224), np.float32), "std": np.ones((3, 224, 224), np.float32)}
    state = ckpt.make_checkpoint(model=create_model("baseline_cnn", num_classes=len(CLASSES)), optimizer=None,
                                 cfg_dict=config.to_dict(cfg), class_names=CLASSES, norm=norm, epoch=0, history=[])
    state["model"] = BaselineCnnBeforeBatchNorm(len(CLASSES)).state_dict()
    ckpt.save(state, cfg.output)
    return cfg.output, cfg


def test_a_command_reading_the_checkpoint_exits_2_in_one_line_and_writes_nothing(old_run, tmp_path, capsys):
    run, _ = old_run
    before = sorted(os.listdir(run))
    code = cli.main(["export", "--checkpoint", run, "--output", str(tmp_path / "exported")])
    shown = capsys.readouterr()
    err = shown.err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "Ray" not in shown.out, shown.out  # export starts no Ray, and its first line says whose output is logged
    assert "checkpoint: weights do not fit family 'baseline_cnn' (" in err[0]
    assert "missing, e.g. 'features.1.weight'" in err[0] and "unexpected, e.g. 'features.0.bias'" in err[0]
    assert err[0].endswith("it was saved by another version of the family; train it again")
    assert not (tmp_path / "exported").exists() and sorted(os.listdir(run)) == before


def test_resuming_it_is_refused_before_any_training(old_run):
    run, cfg = old_run
    info = DataInfo(files=[], class_names=CLASSES, counts={}, face_shape=(224, 224, 3))
    with pytest.raises(ConfigError, match=r"^output: .* holds a 'baseline_cnn' run whose weights do not fit this "
                                          r"version's 'baseline_cnn' \(.*\); choose another --output or pass "
                                          r"--resume false") as refused:
        trainer.check_resume(cfg, info)
    assert "\n" not in str(refused.value)
    trainer.check_resume(trainer.with_fields(cfg, {"resume": False}), info)  # starting over is allowed


def test_weights_of_this_version_still_load(old_run):
    run, cfg = old_run
    state = ckpt.load(run)
    state["model"] = create_model("baseline_cnn", num_classes=len(CLASSES)).state_dict()
    ckpt.save(state, run)
    model = ckpt.build_model(ckpt.load(run), "baseline_cnn")
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, len(CLASSES))
    trainer.check_resume(cfg, DataInfo(files=[], class_names=CLASSES, counts={}, face_shape=(224, 224, 3)))
