"""Config values are finite and of their declared type: nothing is silently converted.

Every field of every config goes through the same checks, whether the value comes from
YAML, from `--set` or from a flag; a refusal names the field, the value and what is expected.
"""
from __future__ import annotations

import math

import pytest
import yaml

from fer_ray import cli, config
from fer_ray.config import (
    ConfigError,
    FaceConfig,
    PredictConfig,
    PreprocessConfig,
    SplitConfig,
    SynthesizeConfig,
    TrainConfig,
    TuneConfig,
)

COMMANDS = {"preprocess": PreprocessConfig, "synthesize": SynthesizeConfig, "train": TrainConfig,
            "tune": TuneConfig, "predict": PredictConfig}
CONFIGS = (*COMMANDS.values(), FaceConfig, SplitConfig)

# values each kind of field refuses, as Python values (what YAML or a caller hands over)
REFUSED = {
    float: [math.nan, math.inf, -math.inf, True, False, "nan", "inf", "-Infinity", "1e999", 10**400,
            [1.0], {"a": 1.0}, None],
    int: [2.7, "2.7", -0.5, "1e-3", True, False, math.nan, math.inf, "nan", "big", [3], None],
    bool: [1, 0, "1", "0", 2, 1.0, "maybe", "", [True], None],
    str: [["a", "b"], {"a": "b"}, 2.5, True, None],
}
# values each kind accepts, with what they become
ACCEPTED = {
    float: [("1e-3", 0.001), (" 2.5 ", 2.5), (3, 3.0), (0.25, 0.25)],
    int: [(3.0, 3), ("4", 4), (" -2 ", -2), ("5.0", 5), (7, 7)],
    bool: [(True, True), (False, False), ("Yes", True), ("OFF", False), ("true", True), ("no", False),
           ("on", True)],
    str: [("s3://bucket/x", "s3://bucket/x"), ("", ""), (64, "64")],  # a whole number is its text
}
# what the command line refuses (text only) for each kind
REFUSED_TEXT = {float: ["nan", "inf", "-inf"], int: ["2.7"], bool: ["1", "0"], str: []}


@pytest.fixture(autouse=True)
def run_logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RAY_LOG_DIR", str(tmp_path / "logs"))


def fields_of(kind: type) -> list[tuple[type, str]]:
    return [(cls, path) for cls in CONFIGS for path, (_, field_kind) in config.leaf_fields(cls).items()
            if field_kind is kind]


def nested(path: str, value) -> dict:
    """{"face": {"size": value}} for "face.size"."""
    *parents, leaf = path.split(".")
    data = {leaf: value}
    for name in reversed(parents):
        data = {name: data}
    return data


def test_every_field_has_a_checked_kind():
    kinds = {kind for cls in CONFIGS for _, kind in config.leaf_fields(cls).values()}
    assert kinds <= set(REFUSED), kinds - set(REFUSED)
    assert all(fields_of(kind) for kind in REFUSED)


@pytest.mark.parametrize("kind", list(REFUSED), ids=lambda k: k.__name__)
def test_set_field_refuses_values_of_another_kind(kind):
    for cls, path in fields_of(kind):
        for value in REFUSED[kind]:
            cfg = cls()
            before = config.to_dict(cfg)
            with pytest.raises(ConfigError) as caught:
                config.set_field(cfg, path, value)
            message = str(caught.value)
            assert message.startswith(f"{path}: "), message
            assert config.show(value) in message or "no value given" in message, message
            assert "expected" in message, message
            assert config.to_dict(cfg) == before, f"{path} changed by a refused {value!r}"


@pytest.mark.parametrize("kind", list(ACCEPTED), ids=lambda k: k.__name__)
def test_set_field_accepts_exact_values(kind):
    for cls, path in fields_of(kind):
        for value, expected in ACCEPTED[kind]:
            cfg = cls()
            config.set_field(cfg, path, value)
            got = cli._get(cfg, path)
            assert got == expected and type(got) is kind, (path, value, got)


@pytest.mark.parametrize("kind", list(REFUSED), ids=lambda k: k.__name__)
def test_yaml_refuses_values_of_another_kind(kind):
    for cls, path in fields_of(kind):
        for value in REFUSED[kind]:
            text = yaml.safe_dump(nested(path, value))
            with pytest.raises(ConfigError, match=f"^{path}: "):
                config.load_yaml(cls(), text)


def test_yaml_examples_from_the_field():
    for text, expected in [("lr: true", "lr: True is not a valid float (expected a number, not a boolean)"),
                           ("lr: .nan", "lr: nan is not a finite number"),
                           ("lr: -.inf", "lr: -inf is not a finite number"),
                           ("epochs: 2.7", "epochs: 2.7 is not a valid int"),
                           ("gpu: 1", "gpu: 1 is not a boolean; use true or false"),
                           ("output: [a, b]", "output: ['a', 'b'] is not text"),
                           ("output: {a: b}", "output: {'a': 'b'} is not text")]:
        with pytest.raises(ConfigError) as caught:
            config.load_yaml(TrainConfig(), text)
        assert str(caught.value).startswith(expected), (text, str(caught.value))
    cfg = TrainConfig()
    config.load_yaml(cfg, "epochs: 3.0\nlr: 1e-3\ngpu: yes\n")  # YAML 1.1 reads 1e-3 as text
    assert (cfg.epochs, cfg.lr, cfg.gpu) == (3, 0.001, True) and type(cfg.epochs) is int


def test_a_group_of_fields_needs_a_mapping():
    with pytest.raises(ConfigError, match=r"^face: 3 is not a mapping"):
        config.load_yaml(PreprocessConfig(), "face: 3")
    with pytest.raises(ConfigError, match=r"^face.size: \{'a': 1\} is not a valid int"):
        config.load_yaml(PreprocessConfig(), "face: {size: {a: 1}}")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_flags_and_set_refuse_what_yaml_refuses(command):
    cls = COMMANDS[command]
    parser = cli.build_parser()
    for path, (leaf, kind) in config.leaf_fields(cls).items():
        for text in REFUSED_TEXT[kind]:
            flag = f"--{leaf.replace('_', '-')}={text}"  # `=`: argparse would take -inf for an option
            for argv in ([command, flag], [command, "--set", f"{path}={text}"]):
                with pytest.raises(ConfigError, match=f"^{path}: {text!r} is not"):
                    cli.build_config(cls, parser.parse_args(argv))


def test_cli_exits_2_on_a_non_finite_value(capsys, tmp_path):
    out = tmp_path / "out"
    for flag, expected in [("--num-gpus=nan", "num_gpus: 'nan' is not a finite number"),
                           ("--crop-width=inf", "face.crop_width: 'inf' is not a finite number"),
                           ("--size=2.7", "face.size: '2.7' is not a valid int"),
                           ("--smooth=1", "face.smooth: '1' is not a boolean; use true or false")]:
        code = cli.main(["preprocess", "--layout", "jaffe", "--input", str(tmp_path), "--output", str(out), flag])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_bare_boolean_flag_still_means_true():
    args = cli.build_parser().parse_args(["train", "--gpu", "--bf16", "off"])
    cfg = cli.build_config(TrainConfig, args)
    assert cfg.gpu is True and cfg.bf16 is False


def test_the_learning_rate_is_the_familys_unless_given():
    """lr 0 (the default) is the family's rate: 1e-4 for mixed_cnn and c3d, which diverge or
    stay at one class at the 1e-3 the other families take; a given rate is kept."""
    assert [TrainConfig(model=name).resolved_lr() for name in ("dexpression_fer", "mixed_cnn", "c3d")] == [
        1e-3, 1e-4, 1e-4]
    assert TrainConfig(model="c3d", lr=5e-4).resolved_lr() == 5e-4
    expected = r"^lr: -0.001 must be > 0, or 0 for the family's default \(0.001 for dexpression_fer\)$"
    with pytest.raises(ConfigError, match=expected):
        TrainConfig(data="d", output="o", lr=-1e-3).validate()
