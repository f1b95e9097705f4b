"""Training on clips without Ray: one augmentation draw per clip, the clip families at
T=12 and T=16 (and their checkpoints), clip batching and normalisation, and the errors of
a clip family given image shards or an image family given clips."""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pyarrow as pa
import pytest
import torch

from fer_ray import config, results
from fer_ray.config import ConfigError, TrainConfig, TuneConfig
from fer_ray.labels import BASIC7, CANONICAL
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model, get_spec
from fer_ray.models.inputs import Batcher
from fer_ray.pipelines.export import run_export
from fer_ray.schema import FACES
from fer_ray.training import data, sweep
from fer_ray.training.augment import augment
from tests.clip_shards import clip_row, clip_table, write_clip_shards

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMALL = {"fc_size": 32}  # c3d's 4096-wide FC layers are not what these tests check


def same_up_to_an_offset(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal but for one constant: the contrast pivots about the mean of the whole clip."""
    difference = a - b
    return float(difference.max() - difference.min()) < 1e-3 and float(difference.abs().max()) < 1.0


def test_every_frame_of_a_clip_gets_the_same_transform():
    """Frames A and B (B = A transposed: the same pixel values) augmented in one clip [A, B]
    match those of the clips [A, A] and [B, B] under the same seed: one draw per clip (flip,
    rotation, shift, brightness, contrast), applied to each frame alike. They match up to a
    fraction of a grey level: the contrast pivot is the clip's mean after warping."""
    frame = 60 + torch.rand(1, 1, 24, 24) * 135  # mid-grey: brightness and contrast never clip
    other = frame.transpose(-1, -2)

    def augmented(first, second):
        clip = torch.stack((first, second), dim=1)  # (1, 2, 1, 24, 24)
        return augment(clip, None, strength=1.0, generator=torch.Generator().manual_seed(7))[0]

    mixed = augmented(frame, other)
    assert same_up_to_an_offset(mixed[:, 0], augmented(frame, frame)[:, 0])
    assert same_up_to_an_offset(mixed[:, 1], augmented(other, other)[:, 1])
    assert not same_up_to_an_offset(mixed[:, 0], frame)  # it did transform them
    seeded_otherwise = augment(torch.stack((frame, other), dim=1), None, strength=1.0,
                               generator=torch.Generator().manual_seed(8))[0]
    assert not same_up_to_an_offset(seeded_otherwise[:, 0], mixed[:, 0])  # the check can fail


def test_clips_of_a_batch_get_different_transforms_their_frames_one():
    clip = (torch.rand(1, 1, 1, 24, 24) * 255).expand(4, 6, 1, 24, 24)  # 4 clips of one frame x 6
    out, _ = augment(clip, None, strength=1.0, generator=torch.Generator().manual_seed(3))
    assert out.shape == clip.shape
    for sample in out:
        assert torch.equal(sample[0].expand_as(sample), sample)  # all frames alike
    assert all(not torch.allclose(out[0, 0], out[i, 0], atol=1.0) for i in range(1, 4))


def test_clip_augmentation_refuses_landmarks():
    with pytest.raises(ValueError, match="without landmarks"):
        augment(torch.zeros(1, 2, 1, 8, 8), torch.zeros(1, 68, 2), strength=1.0)


@pytest.mark.parametrize("frames", [12, 16])
@pytest.mark.parametrize("name", ["cnn_lstm", "c3d"])
def test_clip_families_take_the_seed_and_the_default_clip_length(name, frames):
    torch.manual_seed(0)
    model = create_model(name, clip_length=frames, **SMALL).eval()
    clip = torch.randn(3, frames, 1, 48, 48)
    logits = model(clip)
    assert logits.shape == (3, len(BASIC7)) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_c3d_is_built_for_one_clip_length():
    assert create_model("c3d", clip_length=12, **SMALL).head[1].in_features == 512
    assert create_model("c3d", clip_length=16, **SMALL).head[1].in_features == 1024  # 16 -> 2 frames left
    with pytest.raises(ValueError, match="built for 12-frame clips, given 16"):
        create_model("c3d", clip_length=12, **SMALL)(torch.zeros(1, 16, 1, 48, 48))
    with pytest.raises(ValueError, match="at least 8"):
        create_model("c3d", clip_length=6, **SMALL)


@pytest.mark.parametrize("name", ["cnn_lstm", "c3d"])
def test_checkpoint_records_the_clip_length_and_rebuilds_the_same_model(name):
    cfg = TrainConfig(model=name, clip_length=16, **SMALL)
    torch.manual_seed(1)
    model = create_model(name, num_classes=4, **ckpt.architecture(cfg)).eval()
    state = ckpt.load_bytes(ckpt.to_bytes(ckpt.make_checkpoint(
        model=model, optimizer=None, cfg_dict=dataclasses.asdict(cfg), class_names=BASIC7[:4],
        norm={}, epoch=0, history=[])), "memory")
    assert state["spec"]["clip_length"] == 16 and ckpt.spec_of(state).clip_length == 16
    clip = torch.randn(2, 16, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(ckpt.build_model(state)(clip), model(clip))


def test_clip_rows_become_b_t_c_h_w_with_lost_frames_blank():
    rng = np.random.default_rng(0)
    rows = [clip_row("happy", "S1", "train", 0, 5, rng, invalid=(2,)), clip_row("contempt", "S1", "train", 0, 5, rng)]
    batch = {key: np.array([row[key] for row in rows], dtype=object) for key in ("frames", "frame_shape")}
    batch["label"] = np.array([row["label"] for row in rows])
    out = data.clip_arrays(batch, "basic7")  # contempt is not in basic7: its clip is dropped
    assert out["clip"].shape == (1, 5, 1, 48, 48) and out["clip"].dtype == np.uint8
    assert out["label"].tolist() == [BASIC7.index("happy")]
    frames = np.frombuffer(rows[0]["frames"], np.uint8).reshape(5, 48, 48, 1)
    assert np.array_equal(out["clip"][0, 4, 0], frames[4, :, :, 0])
    assert not out["clip"][0, 2].any() and out["clip"][0, 3].any()  # the lost frame stays, blank
    assert "landmarks" not in out  # no clip family takes them


def test_clip_moments_are_per_pixel_over_every_frame():
    clips = np.random.default_rng(2).integers(0, 256, (3, 4, 1, 5, 5)).astype(np.uint8)
    moments = data.pixel_moments({"clip": clips})
    frames = clips.reshape(12, -1).astype(np.float64)
    assert moments["n"][0] == 12
    assert np.allclose(moments["sum"][0], frames.sum(0)) and np.allclose(moments["sumsq"][0], (frames ** 2).sum(0))


def test_batcher_standardises_clips_with_the_frame_statistics():
    spec = get_spec("c3d")
    mean = np.arange(48 * 48, dtype=np.float32).reshape(1, 48, 48) % 200
    batcher = Batcher(spec, {"mean": mean, "std": np.full((1, 48, 48), 2, np.float32)}, torch.device("cpu"), 48)
    clip = torch.from_numpy(np.broadcast_to(mean.astype(np.uint8) + 10, (2, 12, 1, 48, 48)).copy())
    (inputs,) = batcher.inputs({"clip": clip, "label": torch.zeros(2)})
    assert inputs.shape == (2, 12, 1, 48, 48)
    assert torch.allclose(inputs, torch.full_like(inputs, 5.0))  # (mean + 10 - mean) / 2 in every frame


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A committed clips-only output (T=8) and a committed faces-only output."""
    root = tmp_path_factory.mktemp("clip-outputs")
    clips, faces = str(root / "clips"), str(root / "faces")
    write_clip_shards(clips, subjects=6, takes=1, frames=8, classes=("happy", "sad"))
    results.commit_tables(faces, "preprocess", {"faces": [FACES.empty_table()]})
    return clips, faces


def scan(data_uri: str, **fields) -> data.DataInfo:
    return data.scan(TrainConfig(data=data_uri, output="unused", **fields))


def test_scan_reads_clip_length_and_frame_shape_of_clips(outputs):
    info = scan(outputs[0], model="cnn_lstm")
    assert info.is_clips and info.clip_length == 8 and info.face_shape == (48, 48, 1)
    happy, sad = BASIC7.index("happy"), BASIC7.index("sad")
    assert info.counts["train"][happy] == info.counts["train"][sad] == 2  # 2 train subjects x 1 take


def test_clip_family_given_image_shards_is_told_before_training(outputs):
    with pytest.raises(ConfigError, match=r"model 'c3d' takes clips/ \(video clips\), but the preprocess "
                                          r"result at .*faces holds faces/ \(aligned face images\); preprocess "
                                          r"a video layout"):
        scan(outputs[1], model="c3d")


def test_image_family_given_clips_is_told_before_training(outputs):
    with pytest.raises(ConfigError, match=r"model 'dexpression_fer' takes faces/ \(aligned face images\), "
                                          r"but .* holds clips/ \(video clips\); train a clip family "
                                          r"\(c3d, cnn_lstm\)"):
        scan(outputs[0], model="dexpression_fer")


def test_clip_length_must_match_the_data_and_fit_the_family(outputs, tmp_path):
    with pytest.raises(ConfigError, match="clip_length: 12, but the clips in .* have 8 frames"):
        scan(outputs[0], model="cnn_lstm", clip_length=12)
    short = str(tmp_path / "short")
    results.commit_tables(short, "preprocess", {"clips": [clip_table(subjects=5, takes=1, frames=4)]})
    assert scan(short, model="cnn_lstm").clip_length == 4
    with pytest.raises(ConfigError, match="have 4 frames, but model 'c3d' needs at least 8"):
        scan(short, model="c3d")


def test_clips_of_two_shapes_are_refused(outputs, tmp_path):
    mixed = str(tmp_path / "mixed")
    tables = [clip_table(subjects=5, takes=1, frames=frames, classes=("happy",)) for frames in (8, 9)]
    results.commit_tables(mixed, "preprocess", {"clips": [pa.concat_tables(tables)]})
    with pytest.raises(ConfigError, match=r"have 2 shapes \(T, h, w, c\): \[\(8, 48, 48, 1\), \(9, 48, 48, 1\)\]"):
        scan(mixed, model="cnn_lstm")


def test_clip_labels_are_canonical():
    table = clip_table(subjects=5, takes=1, frames=8, classes=("surprise",))
    assert set(table["label"].to_pylist()) == {CANONICAL.index("surprise")}
    assert set(table["split"].to_pylist()) == {"train", "val", "test"}


def test_a_sweep_over_the_clip_families_checks_out_and_refuses_image_shards(outputs, tmp_path):
    clips, faces = outputs
    sweep_cfg = TuneConfig(models="cnn_lstm,c3d", trials=2,
                           train=TrainConfig(data=clips, output=str(tmp_path / "sweep"), fc_size=32))
    sweep.check(sweep_cfg)  # every family against the data, as `fer-ray tune` does before any Ray work
    with pytest.raises(ConfigError, match=r"model 'cnn_lstm' takes clips/"):
        sweep.check(dataclasses.replace(sweep_cfg, train=dataclasses.replace(sweep_cfg.train, data=faces)))


def test_an_exported_16_frame_c3d_round_trips(tmp_path):
    """`fer-ray export` of a c3d checkpoint built for 16 frames (not the family's default 12):
    TorchScript and ONNX are checked against it inside run_export, and the TorchScript file
    gives the checkpoint model's probabilities on raw 0-255 clips."""
    cfg = TrainConfig(model="c3d", clip_length=16, **SMALL)
    torch.manual_seed(2)
    model = create_model("c3d", num_classes=len(BASIC7), **ckpt.architecture(cfg)).eval()
    norm = {"mean": np.full((1, 48, 48), 110, np.float32), "std": np.full((1, 48, 48), 40, np.float32)}
    ckpt.save(ckpt.make_checkpoint(model=model, optimizer=None, cfg_dict=dataclasses.asdict(cfg),
                                   class_names=BASIC7, norm=norm, epoch=0, history=[]), str(tmp_path / "run"))
    written = run_export(str(tmp_path / "run"), str(tmp_path / "export"))
    manifest = json.loads((tmp_path / "export" / "export.json").read_text())
    assert manifest["inputs"] == [{"name": "clip", "shape": [-1, 16, 1, 48, 48], "dtype": "float32"}]
    clip = torch.rand(3, 16, 1, 48, 48) * 255
    with torch.no_grad():
        expected = torch.softmax(model((clip - 110) / 40), dim=1)
        exported = torch.jit.load(written["torchscript"])(clip)
    assert torch.allclose(exported, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_lstm", "c3d"])
def test_seed_001_baum2_training_configs_load_and_validate(name):
    cfg = TrainConfig()
    config.load_yaml_file(cfg, str(ROOT / "configs" / "baum2_seed001" / f"{name}.yaml"))
    cfg.data, cfg.output = "s3://bucket/baum2-clips", f"s3://bucket/runs/{name}"
    cfg.validate()
    assert (cfg.model, cfg.clip_length, cfg.label_set) == (name, 12, "canonical8")
