"""Clip families end to end on the S3 test server: cnn_lstm and c3d trained by the real Ray
Train trainer on committed synthetic clips/ (tests/clip_shards.py), scored on held-out
subjects, then evaluated and predicted on clips."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from fer_ray import storage
from fer_ray.config import ConfigError, PredictConfig, TrainConfig
from fer_ray.labels import BASIC7
from fer_ray.models import checkpoint as ckpt
from fer_ray.pipelines import predict
from fer_ray.report import print_report
from fer_ray.training import trainer
from fer_ray.training.evaluate import evaluate
from tests.clip_shards import CLASSES, write_clip_shards

pytestmark = pytest.mark.integration
FRAMES = 8  # the fewest c3d takes: the test is about the path, T=12/16 are unit-tested
# 4 classes present: chance macro-F1 is about 0.25; "clearly above" is twice that.
CHANCE = 1 / len(CLASSES)
# Found by a plain loop on the same clips: cnn_lstm learns within about 60 steps of 8 clips
# without augmentation or dropout (each slows the first epochs several-fold; augmentation is
# unit-tested): 2 workers x 4 clips = 8 clips a step, 6 steps an epoch. c3d needs more, smaller
# steps: 2 workers x 2 clips, 12 steps an epoch.
# c3d takes its family's default rate (1e-4): the run checks that the default reaches it.
RECIPES = {
    "cnn_lstm": {"epochs": 10, "lr": 1e-3},
    "c3d": {"epochs": 10, "fc_size": 64, "batch_size": 2},
}
RATES = {"cnn_lstm": 1e-3, "c3d": 1e-4}


@pytest.fixture(scope="module")
def clip_data(bucket, ray_cluster):
    """10 subjects (6 train, 2 val, 2 test) x 4 expressions x 2 takes of 8 frames."""
    uri = f"{bucket}/clip-data/synthetic"
    write_clip_shards(uri, subjects=10, takes=2, frames=FRAMES, seed=0)
    return uri


def clip_config(data: str, output: str, model: str, **overrides) -> TrainConfig:
    return TrainConfig(**{"data": data, "output": output, "model": model, "batch_size": 4, "workers": 2,
                          "cpus_per_worker": 0.5, "augment": 0.0, "dropout": 0.0, "seed": 0, "resume": False,
                          **RECIPES[model], **overrides})


class Runs(dict):
    """family -> (config, test report) of one fixed-seed run, trained when first asked for."""

    def __init__(self, data: str, factory):
        super().__init__()
        self.data, self.factory = data, factory

    def __missing__(self, model: str):
        cfg = clip_config(self.data, str(self.factory.mktemp(f"clip-run-{model}")), model)
        self[model] = cfg, trainer.run(cfg)
        return self[model]


@pytest.fixture(scope="module")
def trained(clip_data, tmp_path_factory):
    """The runs go to local disk: c3d's convolutions alone hold about 20M weights, so each
    epoch's checkpoint (with AdamW's state) is about 240 MB, which the in-process S3 test
    server takes minutes to hold; reading the data from S3 is what this module checks."""
    return Runs(clip_data, tmp_path_factory)


@pytest.mark.parametrize("model", list(RECIPES))
def test_clip_family_beats_chance_on_held_out_subjects(trained, model):
    cfg, report = trained[model]
    assert report["split"] == "test" and report["n"] == 2 * len(CLASSES) * 2  # 2 test subjects, all clips
    assert report["macro_f1"] > 2 * CHANCE, (model, report["per_class_recall"], report["confusion"])
    history = report["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("model", list(RECIPES))
def test_clip_checkpoint_records_its_clip_length(trained, model):
    cfg, _ = trained[model]
    state = ckpt.load(cfg.output)
    assert state["config"]["clip_length"] == FRAMES and state["spec"]["clip_length"] == FRAMES
    assert state["config"]["lr"] == RATES[model]  # the rate the run used, never 0 (the family's)
    assert state["model_name"] == model and state["class_names"] == list(BASIC7)
    assert len(state["norm"]["mean"]) == 1 and tuple(state["norm"]["mean"].shape) == (1, 48, 48)
    for name in ("metrics.json", "confusion.png", "learning_curve.png", "config.yaml"):
        assert storage.exists(storage.join(cfg.output, name)), name


def test_evaluate_a_clip_checkpoint_reproduces_its_test_report(trained, clip_data, tmp_path, capsys):
    cfg, report = trained["c3d"]
    again = evaluate(cfg.output, clip_data, "test", str(tmp_path / "eval"))
    assert again["model"] == "c3d" and again["n"] == report["n"]
    assert again["confusion"] == report["confusion"]
    # counted as what they are, on the screen and on the results page
    assert again["clip_length"] == FRAMES
    print_report(again)
    assert f"c3d on test ({again['n']} clips)" in capsys.readouterr().out
    assert f"({again['n']} clips)</title>" in (tmp_path / "eval" / "report.html").read_text()


def test_predict_over_clips_gives_one_row_per_clip(trained, clip_data, tmp_path):
    cfg, _ = trained["cnn_lstm"]
    output = tmp_path / "clips.parquet"
    summary = predict.run(PredictConfig(checkpoint=cfg.output, input=clip_data, output=str(output)))
    table = pq.read_table(output)
    assert summary["inputs"] == table.num_rows == 10 * len(CLASSES) * 2  # every clip, every split
    assert {"clip_id", "source_uri", "subject", "split", "status", "label", "confidence"} <= set(table.column_names)
    assert set(table["status"].to_pylist()) == {"ok"}
    probabilities = table.select([f"p_{name}" for name in BASIC7]).to_pandas().to_numpy()
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-4
    assert set(table["label"].to_pylist()) <= set(BASIC7)
    assert len(set(table["clip_id"].to_pylist())) == table.num_rows


def test_predict_refuses_images_for_a_clip_checkpoint_and_clips_for_an_image_one(trained, clip_data, tmp_path):
    cfg, _ = trained["c3d"]
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match="input: 'c3d' is a clip model: it predicts over the clips/ of a video "
                                          "preprocess output, but .*images holds no committed fer-ray result"):
        predict.run(PredictConfig(checkpoint=cfg.output, input=str(tmp_path / "images"),
                                  output=str(tmp_path / "out.parquet")))
    with pytest.raises(ConfigError, match=r"input: .* holds clips/ \(video clips\), but 'mini_xception' "
                                          r"classifies faces in images; give a clip checkpoint \(c3d, cnn_lstm\)"):
        predict.run(PredictConfig(checkpoint="pretrained", input=clip_data, output=str(tmp_path / "out.parquet")))
    assert not (tmp_path / "out.parquet").exists()


def test_label_videos_classifies_each_face_from_its_tracks_window(trained, tmp_path):
    from fer_ray import results
    from fer_ray.config import LabelVideosConfig
    from fer_ray.pipelines import label_videos
    from tests import video_faces

    cfg, _ = trained["cnn_lstm"]
    assert label_videos.clip_length_of(ckpt.load(cfg.output)) == FRAMES
    (tmp_path / "videos").mkdir()
    video_faces.expression_change(tmp_path / "videos" / "one_face.mp4")
    summary = label_videos.run(LabelVideosConfig(input=str(tmp_path / "videos"), output=str(tmp_path / "labels"),
                                                 checkpoint=cfg.output, segment_s=2, max_lost_s=2))
    assert summary["status"] == {"ok": 1} and summary["classes"] == list(BASIC7)
    frames = results.read_table(str(tmp_path / "labels"), "frames").to_pylist()
    assert frames and all(len(f["probabilities"]) == len(BASIC7) for f in frames)
    assert all(abs(sum(f["probabilities"]) - 1) < 1e-4 for f in frames)
