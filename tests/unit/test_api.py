"""The Python API (fer_ray.api, fer_ray.readers): the CLI's fields and checks, readers of committed outputs.

No Ray work here: the job functions are called with values the configuration check refuses,
and the readers read outputs published with results.commit_tables (the same marker a job
writes). tests/integration/test_api.py runs jobs through the API.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

import fer_ray
from fer_ray import api, cli, config, results, schema
from fer_ray.config import ConfigError, PreprocessConfig, TuneConfig
from tests.clip_shards import write_clip_shards


@pytest.fixture(autouse=True)
def run_logs_in_tmp(tmp_path, monkeypatch):
    """cli.main writes a log file per invocation; keep the tests' out of the home directory."""
    monkeypatch.setenv("FER_RAY_LOG_DIR", str(tmp_path / "logs"))


def test_import_fer_ray_loads_neither_ray_nor_torch_nor_pyarrow():
    """A fresh interpreter: what `import fer_ray` pulls in, and that every name in __all__ resolves."""
    code = ("import sys, fer_ray; heavy = sorted(m for m in ('ray', 'torch', 'pyarrow', 'pandas') if m in "
            "sys.modules); names = [n for n in fer_ray.__all__ if not getattr(fer_ray, n).__doc__]; "
            "print(heavy, names)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] []", done.stdout + done.stderr


def test_every_job_function_documents_its_fields():
    for function, cls in ((fer_ray.preprocess, PreprocessConfig), (fer_ray.tune, TuneConfig)):
        for path, (leaf, _) in config.leaf_fields(cls).items():
            assert f"    {leaf}" in function.__doc__, (function.__name__, path)
    assert "one of: auto, none, haar" in fer_ray.preprocess.__doc__
    assert "train.epochs" in fer_ray.tune.__doc__


def test_keywords_build_the_same_config_as_the_cli_flags(tmp_path):
    """Flag names, dotted paths, a group as a mapping and a YAML file, with the CLI's precedence."""
    yaml_file = tmp_path / "my.yaml"
    yaml_file.write_text("layout: jaffe\nface: {size: 96, color: rgb}\nbatch_size: 8\n")
    argv = ["preprocess", "--config", str(yaml_file), "--set", "face.crop_width=2.2", "--set", "split.seed=3",
            "--detector", "dlib_hog", "--size", "64", "--input", "in", "--output", "out"]
    from_cli = cli.build_config(PreprocessConfig, cli.parse_command_line(cli.build_parser(), argv))
    from_api = api.make_config(PreprocessConfig, str(yaml_file), {
        "face.crop_width": "2.2", "split": {"seed": 3}, "detector": "dlib_hog", "size": 64,
        "input": "in", "output": "out"})
    assert config.to_dict(from_api) == config.to_dict(from_cli)
    assert (from_api.face.size, from_api.face.color, from_api.batch_size, from_api.face.crop_width) == (
        64, "rgb", 8, 2.2)


def test_a_config_object_is_copied_not_changed():
    base = PreprocessConfig(layout="jaffe", input="in", output="out")
    cfg = api.make_config(PreprocessConfig, base, {"detector": "haar", "face": {"size": 32}})
    assert (cfg.face.detector, cfg.face.size) == ("haar", 32)
    assert (base.face.detector, base.face.size) == ("auto", PreprocessConfig().face.size)
    # tune: flags of the train group by name, as on the command line
    tune = api.make_config(TuneConfig, {"train": {"model": "enm"}}, {"epochs": 3, "trials": 2})
    assert (tune.train.model, tune.train.epochs, tune.trials) == ("enm", 3, 2)


@pytest.mark.parametrize("argv, fields", [
    (["--layout", "nope"], {"layout": "nope"}),
    (["--layout", "jaffe", "--detector", "mtcnn"], {"layout": "jaffe", "detector": "mtcnn"}),
    (["--layout", "jaffe", "--size", "big"], {"layout": "jaffe", "face": {"size": "big"}}),
    (["--layout", "jaffe", "--size", "-3"], {"layout": "jaffe", "size": -3}),
    (["--layout", "jaffe", "--set", "face.nope=1"], {"layout": "jaffe", "face.nope": 1}),
])
def test_a_bad_field_raises_the_error_the_cli_prints(capsys, monkeypatch, tmp_path, argv, fields):
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray work started before the check"))
    common = {"input": str(tmp_path), "output": str(tmp_path / "o")}
    code = cli.main(["preprocess", "--input", common["input"], "--output", common["output"], *argv])
    err = capsys.readouterr().err
    assert code == 2
    with pytest.raises(ConfigError) as raised:
        fer_ray.preprocess(**fields, **common)
    assert f"fer-ray: configuration error: {raised.value}\n" == err
    assert not (tmp_path / "o").exists()


def test_a_failed_quiet_call_leaves_its_traceback_in_the_log_and_the_output_as_it_was(capsys, monkeypatch, tmp_path):
    """The exception reaches the caller; the log the one line named holds its traceback; an
    earlier output is untouched; Ray's console handlers and the screen are as they were."""
    import logging
    import re

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray work started before the check"))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "earlier.txt").write_text("last good result")
    handlers = {h: h.stream for h in logging.getLogger("ray").handlers if isinstance(h, logging.StreamHandler)}
    with pytest.raises(ConfigError, match="face.detector: 'mtcnn' is not valid"):
        fer_ray.preprocess(layout="jaffe", input=str(tmp_path), output=str(tmp_path / "o"), detector="mtcnn")
    print("after the call")
    shown = capsys.readouterr().out.splitlines()
    said = re.fullmatch(r"fer_ray.preprocess: Ray's own output goes to (\S+) \(verbose=True shows it here\)", shown[0])
    assert said and shown[1:] == ["after the call"], shown
    log = open(said.group(1)).read()
    assert "fer_ray.preprocess failed" in log and "ConfigError: face.detector: 'mtcnn'" in log
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["earlier.txt"]
    assert (tmp_path / "o" / "earlier.txt").read_text() == "last good result"
    assert {h: h.stream for h in handlers} == handlers


def test_an_unknown_keyword_names_the_valid_fields(monkeypatch, tmp_path):
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray work started before the check"))
    with pytest.raises(ConfigError, match="gpu_batch: unknown field; valid fields: .*face.detector"):
        fer_ray.preprocess(layout="jaffe", input=str(tmp_path), output=str(tmp_path / "o"), gpu_batch=2)
    with pytest.raises(ConfigError, match="face: 'haar' is not a mapping"):
        fer_ray.preprocess(layout="jaffe", input=str(tmp_path), output=str(tmp_path / "o"), face="haar")
    with pytest.raises(ConfigError, match="config: 3 is not a YAML file path, a PreprocessConfig or a mapping"):
        fer_ray.preprocess(3)


def test_evaluate_checks_its_split_before_any_work():
    with pytest.raises(ConfigError, match="split: 'dev' is not valid; choose one of: train, val, test"):
        fer_ray.evaluate("no/run", "no/data", split="dev")


# ---------------------------------------------------------------- readers

SIDE = 40


def face_rows(split: str, count: int, offset: int = 0) -> pa.Table:
    rng = np.random.default_rng(offset)
    rows = [schema.row(schema.FACES, sample_id=f"s{offset + i}", subject=f"S{i % 2}", split=split, label=i % 8,
                       face=rng.integers(0, 255, (SIDE, SIDE, 1), np.uint8).tobytes(), face_shape=[SIDE, SIDE, 1],
                       landmarks=rng.uniform(0, SIDE, 136).astype(np.float32).tolist())
            for i in range(count)]
    return pa.Table.from_pylist(rows, schema=schema.FACES)


@pytest.fixture
def committed_faces(tmp_path):
    """A committed output (2 train + 3 test faces in two files), and a failed run's file beside it."""
    output = str(tmp_path / "out")
    manifest = pa.Table.from_pylist([schema.row(schema.MANIFEST, source_uri="a", status="ok")], schema=schema.MANIFEST)
    results.commit_tables(output, "preprocess", {"faces": [face_rows("train", 2), face_rows("test", 3, 10)],
                                                 "manifest": [manifest]})
    failed = tmp_path / "out" / "runs" / "failed-run" / "faces"
    failed.mkdir(parents=True)
    pq.write_table(face_rows("train", 7, 100), failed / "part-00000.parquet")
    return output


def test_read_faces_decodes_the_committed_run_only(committed_faces):
    faces = fer_ray.read_faces(committed_faces)
    assert sorted(faces.sample_id) == ["s0", "s1", "s10", "s11", "s12"]  # none of the failed run's s100...
    assert all(f.shape == (SIDE, SIDE) and f.dtype == np.uint8 for f in faces.face)
    assert all(p.shape == (68, 2) and p.dtype == np.float32 for p in faces.landmarks)
    raw = results.read_table(committed_faces, "faces", ["sample_id", "face"]).to_pylist()
    first = next(r for r in raw if r["sample_id"] == faces.sample_id[0])
    assert faces.face[0].tobytes() == first["face"]
    assert list(faces.columns) == schema.FACES.names  # decoded columns stay in their places
    assert list(fer_ray.read_manifest(committed_faces).status) == ["ok"]


def test_read_faces_keeps_a_split_and_the_columns_asked_for(committed_faces):
    test = fer_ray.read_faces(committed_faces, split="test", columns=["sample_id", "face"])
    assert list(test.columns) == ["sample_id", "face"] and len(test) == 3
    assert test.face[0].shape == (SIDE, SIDE)
    with pytest.raises(ConfigError, match="split: 'dev' is not valid"):
        fer_ray.read_faces(committed_faces, split="dev")
    with pytest.raises(ConfigError, match="columns: .*'pixels'.* valid columns: sample_id"):
        fer_ray.read_faces(committed_faces, columns=["pixels"])


def test_read_faces_as_arrow_gives_tensor_columns(committed_faces):
    table = fer_ray.read_faces(committed_faces, as_arrow=True)
    assert isinstance(table.column("face").type, pa.FixedShapeTensorType)
    faces = table.column("face").combine_chunks().to_numpy_ndarray()
    assert faces.shape == (5, SIDE, SIDE) and faces.dtype == np.uint8
    assert table.column("landmarks").combine_chunks().to_numpy_ndarray().shape == (5, 68, 2)


def test_a_run_without_faces_reads_as_no_rows_with_the_columns(tmp_path):
    results.publish(results.Commit(str(tmp_path), "preprocess", "run-empty", {"faces": [], "manifest": []}))
    faces = fer_ray.read_faces(str(tmp_path), split="test", columns=["sample_id", "face"])
    assert len(faces) == 0 and list(faces.columns) == ["sample_id", "face"]
    assert list(fer_ray.read_manifest(str(tmp_path)).columns) == schema.MANIFEST.names


def test_a_reader_refuses_an_output_without_a_commit(tmp_path):
    (tmp_path / "out" / "runs" / "interrupted" / "faces").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no committed result yet"):
        fer_ray.read_faces(str(tmp_path / "out"))


def test_read_clips_decodes_frames_and_landmarks(tmp_path):
    write_clip_shards(str(tmp_path / "clips"), subjects=5, takes=1, frames=6)
    clips = fer_ray.read_clips(str(tmp_path / "clips"), split="train")
    assert len(clips) == 4 and set(clips.split) == {"train"}  # subject 0 of 5 trains: 4 classes
    assert all(c.shape == (6, 48, 48) and c.dtype == np.uint8 for c in clips.frames)
    assert all(p.shape == (6, 68, 2) and p.dtype == np.float32 for p in clips.landmarks)
    lost = [(c, v) for c, v in zip(clips.frames, clips.valid) if not all(v)]
    assert lost and all(not c[~np.asarray(v)].any() for c, v in lost)  # a lost frame is blank


def test_read_labels_and_predictions(tmp_path):
    """A label-videos output's tables (frames' landmarks decoded), a one-file and a shards predict output."""
    output = str(tmp_path / "labels")
    frames = [schema.row(schema.VIDEO_FRAMES, video_uri="a.mp4", frame_index=i, label="happy",
                         landmarks=np.arange(136, dtype=np.float32).tolist()) for i in range(3)]
    videos = [schema.row(schema.VIDEOS, video_uri="a.mp4", status="ok", n_faces=3)]
    results.commit_tables(output, "label_videos", {"frames": [pa.Table.from_pylist(frames, schema=schema.VIDEO_FRAMES)],
                                                   "videos": [pa.Table.from_pylist(videos, schema=schema.VIDEOS)]})
    labelled = fer_ray.read_labels(output, table="frames")
    assert list(labelled.frame_index) == [0, 1, 2]
    assert labelled.landmarks[2].shape == (68, 2) and labelled.landmarks[2][1, 0] == 2.0
    assert list(fer_ray.read_manifest(output).status) == ["ok"]  # a labelling's per-input table
    with pytest.raises(ConfigError, match="table: 'faces' is not valid; choose one of: frames, tracks"):
        fer_ray.read_labels(output, table="faces")
    with pytest.raises(ConfigError, match="has no tracks/ files"):
        fer_ray.read_labels(output, table="tracks")
    predictions = pa.table({"source_uri": ["x.png", "y.png"], "label": ["happy", "sad"]})
    pq.write_table(predictions, tmp_path / "p.parquet")
    assert list(fer_ray.read_predictions(str(tmp_path / "p.parquet")).label) == ["happy", "sad"]
    (tmp_path / "p.csv").write_text("source_uri,label\nx.png,happy\n")
    assert list(fer_ray.read_predictions(str(tmp_path / "p.csv")).label) == ["happy"]
    results.commit_tables(str(tmp_path / "shards"), "predict", {"predictions": [predictions]})
    assert fer_ray.read_predictions(str(tmp_path / "shards"), as_arrow=True).equals(predictions)
