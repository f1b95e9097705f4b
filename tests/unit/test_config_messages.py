"""Values in configuration messages are shortened: a huge value never floods a message."""
from __future__ import annotations

import time

import pytest

from fer_ray import cli, config
from fer_ray.config import ConfigError


@pytest.fixture(autouse=True)
def run_logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RAY_LOG_DIR", str(tmp_path / "logs"))


def test_show_shortens_long_values_and_gives_their_length():
    text = "x" * 1_000_000
    shown = config.show(text)
    assert len(shown) < 120 and shown.startswith("'xxx") and "..." in shown and "(1000002 characters)" in shown
    assert config.show("short") == "'short'"
    assert config.show(2.5) == "2.5"
    assert "(100000 items)" in config.show(list(range(100_000)))


def test_show_never_expands_a_shared_nested_value():
    value = ["lol"]
    for _ in range(40):  # 2**40 leaves when written out; shared, as YAML aliases make them
        value = [value, value]
    start = time.perf_counter()
    shown = config.show(value)
    assert time.perf_counter() - start < 1.0 and len(shown) < 120


def test_refusals_never_echo_a_huge_value(capsys, tmp_path):
    huge = "d" * 200_000
    cases = [["--set", f"face.detector={huge}"], ["--set", f"face.{huge}=1"], ["--size", huge],
             ["--set", huge], ["--layout", huge]]
    for extra in cases:
        code = cli.main(["preprocess", "--layout", "jaffe", "--input", str(tmp_path),
                         "--output", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err) < 1000 and "characters)" in err, err[:300]


def test_model_name_is_shortened_in_the_registry_message():
    with pytest.raises(ConfigError) as caught:
        config.model_spec("m" * 10_000)
    message = str(caught.value)
    assert "is not a registered family" in message and len(message) < 1000 and "(10002 characters)" in message
