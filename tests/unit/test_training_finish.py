"""How a training run ends when Ray Train's record of it holds no checkpoint: an earlier run
did every epoch and its driver was killed after the last epoch's upload, before Ray recorded
it. The run's own epoch files decide; with none that loads, the run fails in one line and
leaves the output's checkpoint.pt as it was (no Ray cluster: Ray Train's Result as fit returns it)."""
from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import ray.train
import torch

from fer_ray import cli, config, logs
from fer_ray.config import TrainConfig
from fer_ray.labels import BASIC7
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model
from fer_ray.training import trainer

SCORES = (0.2, 0.7, 0.5)  # val_macro_f1 of epochs 0, 1, 2: epoch 1 is the best


def epoch_state(cfg: TrainConfig, epoch: int) -> dict:
    torch.manual_seed(epoch)  # each epoch's weights differ
    history = [{"epoch": e, "val_macro_f1": SCORES[e]} for e in range(epoch + 1)]
    return ckpt.make_checkpoint(model=create_model(cfg.model, num_classes=len(BASIC7)), optimizer=None,
                                cfg_dict=config.to_dict(cfg), class_names=BASIC7, norm={"mean": np.zeros(1)},
                                epoch=epoch, history=history)


def unrecorded(cfg: TrainConfig) -> ray.train.Result:
    return ray.train.Result(metrics=None, checkpoint=None, error=None, path=cfg.output)


@pytest.fixture
def run(tmp_path) -> tuple[TrainConfig, list[dict]]:
    """A run whose three epoch checkpoints are on storage as Ray Train names them, and a
    fourth whose upload was cut short."""
    cfg = TrainConfig(model="landmark_mlp", output=str(tmp_path / "run"))
    states = [epoch_state(cfg, epoch) for epoch in range(3)]
    for epoch, state in enumerate(states):
        ckpt.save(state, os.path.join(cfg.output, trainer.RUN_NAME, f"checkpoint_2026-12-04_0{epoch}"))
    cut = os.path.join(cfg.output, trainer.RUN_NAME, "checkpoint_2026-12-04_03", ckpt.FILENAME)
    os.makedirs(os.path.dirname(cut))
    with open(cut, "wb") as f:
        f.write(ckpt.to_bytes(epoch_state(cfg, 2))[:100])
    return cfg, states


def test_the_best_of_the_runs_own_epochs_with_the_newest_history(run):
    cfg, states = run
    best, history = trainer.best_and_history(cfg, unrecorded(cfg))
    assert best["epoch"] == 1 and history == states[2]["history"]
    assert all(torch.equal(best["model"][name], states[1]["model"][name]) for name in states[1]["model"])


def test_with_no_epoch_that_loads_the_run_fails_in_one_line_and_keeps_the_output(tmp_path):
    cfg = TrainConfig(model="landmark_mlp", output=str(tmp_path / "run"))
    ckpt.save(epoch_state(cfg, 0), cfg.output)  # the last good result
    before = open(os.path.join(cfg.output, ckpt.FILENAME), "rb").read()
    with pytest.raises(RuntimeError) as raised:
        trainer.finish(cfg, unrecorded(cfg), 1.0, eval_workers=0)
    assert str(raised.value) == ("training: no epoch checkpoint of this run loads; run it again with --resume false "
                                 f"to start over (its epochs: {cfg.output}/train)")
    assert open(os.path.join(cfg.output, ckpt.FILENAME), "rb").read() == before
    assert sorted(os.listdir(cfg.output)) == [ckpt.FILENAME]


def test_as_the_user_meets_it_exit_code_1_one_line_on_stderr_and_the_output_kept(tmp_path, monkeypatch, capsys):
    """The same failure through the CLI's own failure path (`cli.run_command`, as `fer-ray train`
    ends): the command's body is the trainer's finish on Ray Train's empty record."""
    monkeypatch.setenv("FER_RAY_LOG_DIR", str(tmp_path / "logs"))
    cfg = TrainConfig(model="landmark_mlp", output=str(tmp_path / ("experiments-" * 12) / "run"))  # a long path
    ckpt.save(epoch_state(cfg, 0), cfg.output)
    before = open(os.path.join(cfg.output, ckpt.FILENAME), "rb").read()
    args = argparse.Namespace(command="train", verbose=False,
                              func=lambda _: trainer.finish(cfg, unrecorded(cfg), 1.0, eval_workers=0))
    run_log = logs.RunLog("train")
    try:
        code = cli.run_command(args, run_log)
    finally:
        run_log.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    # the advice survives the CLI's 200-character cut of a long output path
    assert lines[0].startswith("fer-ray train: failed: RuntimeError: training: no epoch checkpoint of this run "
                               "loads; run it again with --resume false to start over (its epochs: ")
    assert lines[0].endswith(f" (details: {run_log.path})")
    assert open(os.path.join(cfg.output, ckpt.FILENAME), "rb").read() == before
