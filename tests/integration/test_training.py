"""Training end to end on the S3 test server: a 2-worker CPU TorchTrainer run, its outputs,
resume, evaluate, predict and export, and the errors raised before any training starts."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import threading

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fer_ray import config, results, storage
from fer_ray.config import ConfigError, PredictConfig, TrainConfig
from fer_ray.labels import BASIC7
from fer_ray.models import checkpoint as ckpt
from fer_ray.training import trainer
from tests.browser import check_page
from tests.cluster import wait_for
from tests.conftest import TRAIN_JOB
from tests.integration.helpers import read_output

pytestmark = pytest.mark.integration
EPOCHS = TRAIN_JOB["epochs"]


def train_config(data: str, output: str, **overrides) -> TrainConfig:
    """The training job's settings (tests/conftest.py TRAIN_JOB) as a config."""
    return TrainConfig(**{"data": data, "output": output, **TRAIN_JOB, **overrides})


@pytest.fixture(scope="module")
def trained(training_job, fer_shards):
    """The submitted training job's run (killed and restarted midway) and its report."""
    return train_config(fer_shards, training_job.output), training_job.report


def test_trained_model_beats_chance_on_held_out_subjects(trained):
    _, report = trained
    assert report["split"] == "test" and report["n"] >= 60
    # 7 classes: chance is 14%. The sample faces are learnable by design; test subjects are unseen.
    assert report["accuracy"] >= 0.8, report["per_class_recall"]
    assert report["macro_f1"] >= 0.75


def test_run_writes_checkpoints_metrics_and_plots_to_s3(trained):
    cfg, report = trained
    for name in ("checkpoint.pt", "metrics.json", "confusion.png", "learning_curve.png", "config.yaml"):
        assert storage.exists(storage.join(cfg.output, name)), name
    epoch_checkpoints = [u for u in storage.list_files(storage.join(cfg.output, "train"))
                         if u.endswith("checkpoint.pt")]
    # Ray Train keeps the 2 best (num_to_keep=2) and always the latest, and the worker-group
    # kill may have cut off an upload of each worker before Ray Train registered it (orphans
    # it never deletes): seen as 4 and as 5 files after the same run
    assert 2 <= len(epoch_checkpoints) <= 2 + 1 + TRAIN_JOB["workers"], epoch_checkpoints
    kept_epochs = {ckpt.load_bytes(storage.read_bytes(u), u)["epoch"] for u in epoch_checkpoints}
    assert {report["best_epoch"], EPOCHS - 1} <= kept_epochs
    history = report["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {f"val_recall_{name}" for name in BASIC7} <= set(history[0])

    state = ckpt.load(cfg.output)  # weights_only load
    assert state["class_names"] == list(BASIC7) and state["model_name"] == "dexpression_fer"
    assert state["norm"]["mean"].shape == state["norm"]["std"].shape == (1, 48, 48)
    assert state["optimizer"]["state"] and state["face"]["size"] == 48
    assert state["epoch"] == report["best_epoch"]
    assert storage.read_bytes(storage.join(cfg.output, "confusion.png")).startswith(b"\x89PNG")


def test_no_credentials_in_run_outputs(trained, bucket, s3_server):
    cfg, _ = trained
    name, _, prefix = cfg.output[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
            for o in page.get("Contents", [])]
    assert len(keys) >= 6
    for key in keys:
        assert b"testing-secret" not in client.get_object(Bucket=name, Key=key)["Body"].read(), key


def test_restarted_run_resumes_from_the_latest_checkpoint(trained, ray_cluster):
    cfg, _ = trained
    controllers = alive_train_controllers(ray_cluster.dashboard)
    report = trainer.run(trainer.with_fields(cfg, {"epochs": EPOCHS + 1}))
    history = report["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS + 1))
    assert history[EPOCHS]["restored_from_epoch"] == EPOCHS - 1
    assert history[:EPOCHS] == trained[1]["history"]  # the first run's epochs are kept as they were
    check_ctrl_c_is_back(ray_cluster.dashboard, controllers)


def alive_train_controllers(dashboard: str) -> set[str]:
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return {actor.actor_id for actor in actors}


def check_ctrl_c_is_back(dashboard: str, controllers_before: set[str]) -> None:
    """After a run in this process: Ctrl-C raises KeyboardInterrupt again (Ray Train's handler,
    which swallowed it and exited 0 on the third, is gone) and the run's controller actor is
    gone with it."""
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    wait_for(lambda: alive_train_controllers(dashboard) <= controllers_before, 30, "the run's TrainController to exit")


def test_ctrl_c_during_training_aborts_the_run_and_is_an_interrupt(trained, ray_cluster, fer_shards, bucket):
    """SIGINT mid-fit: Ray Train aborts the run (its handler then calls sys.exit(0)); the run
    ends in KeyboardInterrupt (the CLI exits 130), not in a normal return, and the output's
    last good checkpoint.pt (an earlier run's, here) is left as it was."""
    cfg = train_config(fer_shards, f"{bucket}/runs/ctrl-c")
    last_good = storage.read_bytes(storage.join(trained[0].output, "checkpoint.pt"))
    storage.write_bytes(storage.join(cfg.output, "checkpoint.pt"), last_good)
    controllers = alive_train_controllers(ray_cluster.dashboard)
    epoch_checkpoints = storage.join(cfg.output, "train")

    def interrupt_after_the_first_epoch():
        wait_for(lambda: storage.exists(epoch_checkpoints) and any(
            uri.endswith("checkpoint.pt") for uri in storage.list_files(epoch_checkpoints)), 300, "an epoch")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_the_first_epoch, daemon=True).start()
    with pytest.raises(KeyboardInterrupt, match="Ray Train aborted the run"):
        trainer.run(cfg)
    assert storage.read_bytes(storage.join(cfg.output, "checkpoint.pt")) == last_good
    assert trainer.read_progress(cfg.output)["inputs"] < EPOCHS  # epochs done when it stopped
    check_ctrl_c_is_back(ray_cluster.dashboard, controllers)


def test_a_run_whose_last_checkpoint_ray_never_recorded_ends_from_its_own(trained, bucket):
    """A driver killed after the last epoch's checkpoint was uploaded and before Ray Train
    recorded it (seen in an interrupted sweep): run again, Ray hands the workers no checkpoint
    and they find every epoch done in the run's files. The run still ends: checkpoint.pt is the
    best of those files, and the report holds the whole history, no epoch run twice."""
    cfg, _ = trained
    output = f"{bucket}/train-unrecorded"
    for uri in storage.list_files(storage.join(cfg.output, "train")):
        if uri.endswith("checkpoint.pt"):  # the epoch checkpoints, none of Ray Train's own record
            storage.write_bytes(output + uri[len(cfg.output):], storage.read_bytes(uri))
    states = list(ckpt.epoch_states(output))
    newest = max(states, key=lambda state: state["epoch"])
    report = trainer.run(trainer.with_fields(cfg, {"output": output, "epochs": newest["epoch"] + 1}))
    assert report["history"] == newest["history"]
    score = {entry["epoch"]: entry["val_macro_f1"] for entry in newest["history"]}
    best = max(states, key=lambda state: score[state["epoch"]])
    assert report["best_epoch"] == best["epoch"]
    kept = ckpt.load(output)
    assert kept["epoch"] == best["epoch"] and kept["history"] == newest["history"]
    assert all(torch.equal(kept["model"][name], best["model"][name]) for name in best["model"])


def test_evaluate_reproduces_the_test_report(trained, fer_shards, bucket, tmp_path):
    from fer_ray.training.evaluate import evaluate

    cfg, _ = trained
    report = json.loads(storage.read_bytes(storage.join(cfg.output, "metrics.json")))  # the latest run's
    again = evaluate(storage.join(cfg.output, "checkpoint.pt"), fer_shards, "test", f"{bucket}/eval/dexpression")
    assert again["confusion"] == report["confusion"] and sum(map(sum, again["confusion"])) == again["n"]
    assert storage.exists(f"{bucket}/eval/dexpression/confusion.png")
    assert not storage.exists(f"{bucket}/eval/dexpression/_lease.json")  # released
    check_page(f"{bucket}/eval/dexpression", tmp_path, ["Metrics", "Confusion matrix", "Per-class recall"])


def test_predict_writes_probabilities_per_face_and_keeps_bad_images(trained, tmp_path):
    from fer_ray.pipelines import predict
    from fer_ray.sample_data import write_sample_data

    cfg, _ = trained
    write_sample_data(str(tmp_path / "raw"), layouts=("folder",))
    images = tmp_path / "raw" / "folder"
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    n_images = len(storage.list_files(str(images), (".jpg", ".png")))
    for output in (tmp_path / "pred.parquet", tmp_path / "pred.csv"):
        summary = predict.run(PredictConfig(checkpoint=cfg.output, input=str(images), output=str(output)))
        table = pq.read_table(output) if output.suffix == ".parquet" else _read_csv(output)
        rows = table.to_pylist()
        assert len({r["source_uri"] for r in rows}) == n_images == summary["inputs"]
        broken = [r for r in rows if r["source_uri"].endswith("broken.jpg")]
        assert broken and broken[0]["status"] == "decode_error" and broken[0]["label"] in ("", None)
        faces = [r for r in rows if r["status"] == "ok"]
        assert len(faces) >= 0.8 * n_images
        sums = [sum(r[f"p_{name}"] for name in BASIC7) for r in faces]
        assert np.allclose(sums, 1.0, atol=1e-4)
        assert all(r["label"] in BASIC7 for r in faces)
        assert summary["rows"] == len(rows)  # counted from the write itself


def test_predict_into_a_directory_commits_one_result_per_run(trained, tmp_path):
    """A rerun replaces the committed predictions, never adds to them."""
    from fer_ray.pipelines import predict
    from fer_ray.sample_data import write_sample_data

    cfg, _ = trained
    write_sample_data(str(tmp_path / "raw"), layouts=("mpi",))
    images, output = str(tmp_path / "raw" / "mpi"), str(tmp_path / "predictions")
    pred_cfg = PredictConfig(checkpoint=cfg.output, input=images, output=output)
    first = predict.run(pred_cfg)
    table = read_output(output, "predictions")
    assert first["inputs"] == len(storage.list_files(images)) == len(set(table["source_uri"].to_pylist()))
    assert first["rows"] == table.num_rows and first["run_state"] == "new"
    check_page(output, tmp_path / "page", ["Summary", "Status"], min_images=0)
    written = PredictConfig()  # the run's config.yaml feeds back with --config
    config.load_yaml(written, storage.read_bytes(results.run_uri(output, first["run"], "config.yaml")).decode())
    assert written == pred_cfg
    again = predict.run(pred_cfg)
    assert again["run_state"] == "up to date" and read_output(output, "predictions").equals(table)
    redone = predict.run(dataclasses.replace(pred_cfg, restart=True))
    assert redone["run"] != first["run"] and read_output(output, "predictions").num_rows == table.num_rows


def _read_csv(path):
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path)


def test_export_matches_the_checkpoint_on_real_faces(trained, fer_shards, tmp_path):
    import onnxruntime as ort

    from fer_ray.pipelines.export import run_export
    from fer_ray.stages.classify import ClassifySettings, ClassifyStage
    from fer_ray.training.data import read_split, scan

    cfg, _ = trained
    written = run_export(cfg.output, str(tmp_path / "export"))
    assert {"torchscript", "onnx", "manifest"} <= set(written)
    info = scan(cfg)
    batch = read_split(info, "basic7", "test").take_batch(16, batch_format="numpy")
    expected = ClassifyStage(ClassifySettings(cfg.output))(batch)["probabilities"]
    images = torch.from_numpy(batch["image"].astype(np.float32))
    scripted = torch.jit.load(str(tmp_path / "export" / "model.torchscript.pt"))
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(scripted(images).numpy() - expected).max() < 1e-4
    (from_onnx,) = session.run(["probabilities"], {"image": images.numpy()})
    assert np.abs(from_onnx - expected).max() < 1e-4


# ------------------------------------------------------------ errors before any training


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a TorchTrainer is built: the errors below must come first."""
    built = []

    def spy(*args, **kwargs):
        built.append(args)
        raise AssertionError("TorchTrainer built before the configuration error")

    monkeypatch.setattr(trainer, "TorchTrainer", spy)
    return built


@pytest.mark.parametrize("overrides, message", [
    ({"model": "resnet50"}, "choose one of: baseline_cnn"),
    ({"lr": -0.1}, "lr: -0.1 must be > 0"),
    ({"model": "resnet18"}, "are 48x48x1, but model 'resnet18' expects 224x224x3"),
    ({"label_set": "mixed42"}, "mixed"),
])
def test_bad_training_config_fails_before_training(fer_shards, bucket, no_training, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        trainer.run(train_config(fer_shards, f"{bucket}/runs/never", **overrides))
    assert not no_training


def test_split_without_rows_fails_before_training(fer_shards, tmp_path, no_training):
    from fer_ray import results

    faces = read_output(fer_shards, "faces")
    only_train = faces.filter(np.array(faces["split"].to_pylist()) == "train")
    results.commit_tables(str(tmp_path / "data"), "preprocess", {"faces": [only_train]})
    with pytest.raises(ConfigError, match=r"no rows with a basic7 label in split 'val'.*splits present: train\); "
                                         r"choose a split it holds, or preprocess again with a share for 'val'$"):
        trainer.run(train_config(str(tmp_path / "data"), str(tmp_path / "run")))
    assert not no_training


def test_checkpoint_of_another_family_is_refused(trained, fer_shards, no_training):
    cfg, _ = trained
    with pytest.raises(ConfigError, match="holds a 'dexpression_fer' run"):
        trainer.run(trainer.with_fields(cfg, {"model": "vgg_landmarks"}))
    with pytest.raises(ConfigError, match="holds a 'dexpression_fer' model, not 'enm'"):
        ckpt.build_model(ckpt.load(cfg.output), "enm")
    assert not no_training


class Payload:
    """An object whose unpickling would run code: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("content", [b"not a zip at all", b"PK\x03\x04 truncated zip", "pickle"])
def test_corrupt_or_unsafe_checkpoint_is_refused(tmp_path, content, capsys):

    path = tmp_path / "checkpoint.pt"
    if content == "pickle":
        buffer = io.BytesIO()
        torch.save({"format_version": 1, "payload": Payload()}, buffer)
        content = buffer.getvalue()
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a readable fer-ray checkpoint"):
        ckpt.check(str(path))
    assert "pickled code ran" not in capsys.readouterr().out
