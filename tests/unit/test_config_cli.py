"""Configuration: one schema for YAML and flags; bad values fail before any Ray work."""
from __future__ import annotations

import pathlib

import pytest
import ray
import ray.data

from fer_ray import cli, config, schema
from fer_ray.config import ConfigError, PredictConfig, PreprocessConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def run_logs_in_tmp(tmp_path, monkeypatch):
    """cli.main writes a log file per invocation; keep the tests' out of the home directory."""
    monkeypatch.setenv("FER_RAY_LOG_DIR", str(tmp_path / "logs"))


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--layout", "nope"], "layout: 'nope' is not valid; choose one of: fer2013, affectnet, jaffe"),
    (["--layout", "jaffe", "--size", "-3"], "face.size: -3 must be > 0"),
    (["--layout", "jaffe", "--detector", "mtcnn"],
     "face.detector: 'mtcnn' is not valid; choose one of: auto, none, haar"),
    (["--layout", "jaffe", "--detector", "yunet"], "face.detector_model: required"),
    (["--layout", "jaffe", "--size", "big"], "face.size: 'big' is not a valid int"),
    (["--layout", "jaffe", "--set", "face.nope=1"], "face.nope: unknown field"),
    (["--layout", "jaffe", "--landmark-model", "/no/such/model.dat"],
     "face.landmark_model: /no/such/model.dat does not exist"),
])
def test_bad_values_fail_before_ray(capsys, monkeypatch, tmp_path, argv, expected):
    def no_ray_work(*args, **kwargs):
        raise AssertionError("Ray work started before the configuration was checked")

    # a spy, not a stand-in: any call into Ray fails the test (the suite may hold a live Ray session)
    monkeypatch.setattr(ray, "init", no_ray_work)
    monkeypatch.setattr(ray.data.Dataset, "write_datasink", no_ray_work)
    code, err = run_cli(capsys, "preprocess", "--input", str(tmp_path), "--output", str(tmp_path / "o"), *argv)
    assert code == 2 and expected in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--output", "p.parquet", "--format", "csv"], "format: 'csv' writes one .csv file, but output 'p.parquet'"),
    (["--output", "out", "--detector", "mtcnn"], "detector: 'mtcnn' is not valid; choose one of: auto, none"),
    (["--output", "out", "--set", "face.size=64"], "face.size: unknown field"),
    (["--output", "out"], "checkpoint: no checkpoint.pt at"),
])
def test_bad_predict_values_fail_before_ray(capsys, monkeypatch, tmp_path, argv, expected):
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray work started before the check"))
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "predict", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path), *argv)
    assert code == 2 and expected in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["logs"]


def test_predict_help_lists_every_field_with_its_default():
    text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["predict"].format_help().split())
    defaults = PredictConfig()
    for path, (leaf, _) in config.leaf_fields(PredictConfig).items():
        assert f"--{leaf.replace('_', '-')}" in text and f"[{path}; default {cli._get(defaults, path)!r}" in text, path


def test_unreadable_input_is_named(capsys, tmp_path):
    code, err = run_cli(capsys, "preprocess", "--layout", "jaffe", "--input", "/does/not/exist",
                        "--output", str(tmp_path))
    assert code == 2 and "input: /does/not/exist does not exist" in err


def test_fer2013_input_must_be_the_csv(capsys, tmp_path):
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    code, err = run_cli(capsys, "preprocess", "--layout", "fer2013", "--input", str(tmp_path / "x.csv"),
                        "--output", str(tmp_path / "o"))
    assert code == 2 and "emotion,pixels,Usage" in err


def test_yaml_then_set_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("layout: jaffe\ninput: in\noutput: out\nface: {size: 64, detector: dlib_hog, smooth: false}\n")
    args = cli.build_parser().parse_args(
        ["preprocess", "--config", str(path), "--set", "face.size=96", "--color", "rgb"])
    cfg = cli.build_config(PreprocessConfig, args)
    assert (cfg.face.size, cfg.face.detector, cfg.face.smooth, cfg.face.color) == (96, "dlib_hog", False, "rgb")
    args = cli.build_parser().parse_args(["preprocess", "--config", str(path), "--set", "face.size=96", "--size", "32"])
    assert cli.build_config(PreprocessConfig, args).face.size == 32


def test_written_config_round_trips():
    cfg = PreprocessConfig(layout="mpi", input="s3://b/in", output="s3://b/out")
    cfg.face.crop_width, cfg.split.seed = 2.4, 7
    again = PreprocessConfig()
    config.load_yaml(again, config.to_yaml(cfg))
    assert again == cfg


def test_help_lists_commands_and_choices():
    text = cli.build_parser().format_help()
    for command in ("preprocess", "sample-data", "demo"):
        assert command in text
    sub = cli.build_parser()._subparsers._group_actions[0].choices["preprocess"].format_help()
    assert "--detector" in sub and "dlib_hog" in sub and "--layout" in sub
    # the video layouts' output is named where a user looks for what the command writes
    assert "clips/" in " ".join(sub.split()) and "clips/" in text


def test_readme_documents_every_status_and_column():
    """Every status a job can write is a member of schema.Status, MixedStatus or VideoStatus
    (they are enums, and the code writes members), and README has a row for each, with its meaning."""
    readme = (ROOT / "README.md").read_text()
    for status in [*schema.Status, *schema.MixedStatus, *schema.VideoStatus]:
        assert f"| `{status.value}` |" in readme, status
    video_columns = [*schema.VIDEO_FRAMES.names, *schema.VIDEO_TRACKS.names, *schema.VIDEO_RUNS.names,
                     *schema.VIDEOS.names]
    for name in {*schema.FACES.names, *schema.MANIFEST.names, *schema.MIXED.names, *schema.MIXED_MANIFEST.names,
                 *video_columns}:
        assert f"`{name}`" in readme, name


def test_auto_detector_skips_detection_for_face_crops():
    face = config.FaceConfig()
    assert face.resolved_detector("fer2013") == face.resolved_detector("affectnet") == "none"
    assert face.resolved_detector("jaffe") == "haar"
    with pytest.raises(ConfigError, match="split: train"):
        config.SplitConfig(train=0.5, val=0.1, test=0.1).validate()


def test_preprocess_config_checks_its_split_and_precision():
    cfg = PreprocessConfig(layout="jaffe", input="in", output="out")
    cfg.split.train = 0.5
    with pytest.raises(ConfigError, match="split: train"):
        cfg.validate()
    cfg.split.train, cfg.face.precision = 0.8, "bf16"
    with pytest.raises(ConfigError, match="face.precision: 'bf16' needs a GPU"):
        cfg.validate()
    cfg.num_gpus = 1
    cfg.validate()
    assert cfg.device == "cuda"


@pytest.mark.parametrize("output, format, expected", [
    ("p.parquet", "auto", "parquet"), ("s3://b/P.CSV", "auto", "csv"), ("predictions", "auto", "shards"),
    ("p.parquet.d", "auto", "shards"), ("p.parquet", "parquet", "parquet"), ("spark.parquet", "shards", "shards"),
])
def test_predict_output_format_follows_the_name_unless_given(output, format, expected):
    cfg = PredictConfig(checkpoint="run", input="in", output=output, format=format)
    cfg.validate()
    assert cfg.output_format == expected


@pytest.mark.parametrize("fields, message", [
    ({"checkpoint": ""}, "checkpoint: required"),
    ({"format": "json"}, "format: 'json' is not valid; choose one of: auto, parquet, csv, shards"),
    ({"format": "csv", "output": "p.parquet"}, "format: 'csv' writes one .csv file, but output 'p.parquet' does not"),
    ({"format": "parquet"}, "format: 'parquet' writes one .parquet file, but output 'out' does not"),
    ({"detector": "mtcnn"}, "detector: 'mtcnn' is not valid; choose one of: auto, none, haar"),
    ({"precision": "bf16"}, "precision: 'bf16' needs a GPU (num_gpus > 0)"),
    ({"precision": "fp8", "num_gpus": 1.0}, "precision: 'fp8' is not valid"),
    ({"num_gpus": -1.0}, "num_gpus: -1.0 must be >= 0"),
    ({"batch_size": 0}, "batch_size: 0 must be > 0"),
    ({"rows_per_file": -5}, "rows_per_file: -5 must be >= 0"),
])
def test_predict_config_names_the_bad_field(fields, message):
    cfg = PredictConfig(**{"checkpoint": "run", "input": "in", "output": "out", **fields})
    with pytest.raises(ConfigError) as caught:
        cfg.validate()
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("cls", [PreprocessConfig, PredictConfig])
def test_every_field_explains_itself_in_help(cls):
    helps = config.field_help(cls)
    assert set(helps) == set(config.leaf_fields(cls))
    assert all(text.strip() for text in helps.values()), [k for k, v in helps.items() if not v.strip()]


def test_flags_set_the_config_fields_they_are_made_from():
    """cli.flags, which the tests use to pass options, spells each field as the parser takes it
    (a nested field by its leaf name; a negative value stays the flag's value)."""
    fields = {"layout": "jaffe", "input": "in", "output": "out", "crop_width": 2.2, "min_face_size": 30,
              "clip_start_s": 0.5, "storage_attempts": 4}
    cfg = cli.build_config(PreprocessConfig, cli.build_parser().parse_args(["preprocess", *cli.flags(fields)]))
    assert (cfg.layout, cfg.input, cfg.output, cfg.face.crop_width, cfg.face.min_face_size, cfg.clip_start_s,
            cfg.retry.storage_attempts) == tuple(fields.values())
    negative = cli.build_parser().parse_args(["preprocess", *cli.flags({"size": -3})])
    assert cli.build_config(PreprocessConfig, negative).face.size == -3  # refused later, by validate


def test_a_negative_lr_fails_before_ray_with_one_line_and_leaves_the_last_run(capsys, monkeypatch, tmp_path):
    """`fer-ray train --lr -1`: exit 2, one line naming the field and what 0 means, before any Ray
    work; the output's last good run (its checkpoint.pt) is untouched and no config.yaml is written."""
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray work started before the check"))
    output = tmp_path / "run"
    output.mkdir()
    (output / "checkpoint.pt").write_bytes(b"the last good run")
    code, err = run_cli(capsys, "train", "--data", str(tmp_path / "faces"), "--output", str(output), "--lr", "-1")
    assert code == 2
    assert err.splitlines() == ["fer-ray: configuration error: lr: -1.0 must be > 0, or 0 for the family's default "
                                "(0.001 for dexpression_fer)"]
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint.pt"]
    assert (output / "checkpoint.pt").read_bytes() == b"the last good run"


def test_one_lr_bound_of_a_sweep_fails_before_ray_with_one_line_and_leaves_the_last_sweep(capsys, monkeypatch,
                                                                                          tmp_path):
    """`fer-ray tune --lr-min 1e-3` without --lr-max: exit 2, one line naming both fields and what
    giving neither means, before any Ray work; the output's last sweep results are untouched."""
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray work started before the check"))
    output = tmp_path / "sweep"
    output.mkdir()
    (output / "results.csv").write_text("the last sweep")
    code, err = run_cli(capsys, "tune", "--data", str(tmp_path / "faces"), "--output", str(output), "--lr-min", "1e-3")
    assert code == 2
    assert err.splitlines() == ["fer-ray: configuration error: lr_min/lr_max: 0.001, 0.0; give both bounds, or "
                                "neither (0 and 0: from a tenth to ten times each family's default rate)"]
    assert sorted(p.name for p in output.iterdir()) == ["results.csv"]
    assert (output / "results.csv").read_text() == "the last sweep"
