"""`--config FILE` reads plain YAML only: no tags, few aliases, a bounded size, and every
problem is a one-line ConfigError (exit 2), never a traceback."""
from __future__ import annotations

import dataclasses
import time

import pytest

from fer_ray import cli, config
from fer_ray.config import ConfigError, PredictConfig, PreprocessConfig, SynthesizeConfig, TrainConfig, TuneConfig

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
output: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.fixture(autouse=True)
def run_logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RAY_LOG_DIR", str(tmp_path / "logs"))


def one_line_error(text: str, cls: type = PreprocessConfig) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load_yaml(cls(), text, "c.yaml")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize("text", [
    "input: !!python/object/apply:os.system ['true']",
    "input: !!python/name:os.system",
    "input: !!binary aGVsbG8=",
    "input: !custom x",
    "input: !!str x",
    "input: ! x",
    "face: !!map {size: 64}",
    "layout: jaffe\nface:\n  size: !!int 64",
    "!!map\ninput: x",
    "input: x\nflags: !!set {a, b}",
])
def test_explicit_tags_are_refused(text):
    message = one_line_error(text)
    assert message.startswith("c.yaml, line ") and "tag" in message and "not allowed" in message


def test_an_alias_bomb_is_refused_before_it_expands():
    start = time.perf_counter()
    message = one_line_error(BILLION_LAUGHS, TrainConfig)
    assert "aliases" in message and time.perf_counter() - start < 2.0


def test_a_few_aliases_stay_allowed():
    cfg = PreprocessConfig()
    config.load_yaml(cfg, "layout: jaffe\ninput: &data s3://b/raw\noutput: *data\n"
                          "face: &face {size: 64}\nsplit: {seed: &seed 3}\n")
    assert (cfg.input, cfg.output, cfg.face.size, cfg.split.seed) == ("s3://b/raw", "s3://b/raw", 64, 3)


def test_deep_nesting_is_refused():
    assert "nested deeper" in one_line_error("input: " + "[" * 10_000 + "]" * 10_000)


def test_oversized_config_is_refused(tmp_path):
    text = "layout: jaffe\n" + "#" * (config.MAX_YAML_BYTES + 10) + "\n"
    assert "limit" in one_line_error(text)
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="big.yaml: larger than the 1048576-byte limit"):
        config.load_yaml_file(PreprocessConfig(), str(path))


@pytest.mark.parametrize("text, where, problem", [
    ("layout: jaffe\nface: {size: 64\n", "line 3, column 1", "expected ',' or '}'"),
    ("layout: jaffe\n  input: x\n", "line 2, column 8", "mapping values are not allowed here"),
    ("input: 'open\n", "line 2, column 1", "found unexpected end of stream"),
    ("input: *nowhere\n", "line 1, column 8", "found undefined alias 'nowhere'"),
    ("input: a\n---\ninput: b\n", "line 2, column 1", "but found another document"),
])
def test_syntax_errors_are_one_line_with_file_line_and_column(text, where, problem):
    message = one_line_error(text)
    assert message.startswith(f"c.yaml, {where}: ") and problem in message, message


def test_a_config_must_be_a_mapping():
    assert "expected a mapping of field names" in one_line_error("- input\n- output\n")
    cfg = PreprocessConfig()
    config.load_yaml(cfg, "# nothing set\n")
    assert cfg == PreprocessConfig()


def test_dates_stay_text():
    cfg = PreprocessConfig()
    config.load_yaml(cfg, "input: 2020-01-01\noutput: 2020-01-01 10:00:00\n")
    assert (cfg.input, cfg.output) == ("2020-01-01", "2020-01-01 10:00:00")


def test_yaml_numbers_too_long_to_read_are_a_config_error():
    assert "c.yaml: " in one_line_error("limit: " + "9" * 5000)


@pytest.mark.parametrize("cls", [PreprocessConfig, SynthesizeConfig, TrainConfig, TuneConfig, PredictConfig])
def test_every_written_config_round_trips(cls):
    cfg = cls()
    for path, (_, kind) in config.leaf_fields(cls).items():
        # a value of each field's kind unlike its default, including text that looks like other types
        changed = {bool: lambda v: not v, int: lambda v: v + 7, float: lambda v: v + 1e-5,
                   str: lambda v: {"": "2020-01-01"}.get(v, v + ",yes")}[kind]
        config.set_field(cfg, path, changed(cli._get(cfg, path)))
    again = cls()
    config.load_yaml(again, config.to_yaml(cfg))
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing.yaml", "missing.yaml: cannot read it (No such file or directory)"),
    (lambda tmp: tmp, "cannot read it (Is a directory)"),
    (lambda tmp: write(tmp / "bad.yaml", b"input: \xff\xfe\n"), "bad.yaml: not UTF-8 text"),
    (lambda tmp: write(tmp / "tag.yaml", b"input: !!python/object/new:os.system [x]\n"),
     "tag.yaml, line 1, column 8: YAML tag !!python/object/new:os.system is not allowed"),
    (lambda tmp: write(tmp / "syntax.yaml", b"face: [\n"), "syntax.yaml, line 2, column 1: "),
])
def test_cli_config_problems_exit_2_with_one_line(capsys, tmp_path, make, expected):
    path = make(tmp_path)
    code = cli.main(["preprocess", "--config", str(path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def write(path, data: bytes):
    path.write_bytes(data)
    return path
