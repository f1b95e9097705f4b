"""LabelVideosConfig fails fast naming the field; the CLI has the command with its flags."""
from __future__ import annotations

import pytest

from fer_ray import cli
from fer_ray.config import ConfigError, LabelVideosConfig
from fer_ray.pipelines.label_videos import input_row
from fer_ray.storage import Listed


@pytest.mark.parametrize("field, value, message", [
    ("segment_s", 0.0, "segment_s: 0.0 must be > 0"), ("fps", -1.0, "fps: -1.0 must be"),
    ("overlap_s", 60.0, "overlap_s: 60.0 must be shorter"), ("min_iou", 0.0, "min_iou"),
    ("detector", "nope", "detector: 'nope' is not valid"), ("smooth_s", float("nan"), "smooth_s"),
    ("detect_every_s", -1.0, "detect_every_s: -1.0 must be a finite number >= 0")])
def test_bad_values_name_their_field(field, value, message):
    cfg = LabelVideosConfig(input="in", output="out")
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_defaults_are_valid_and_the_command_has_flags(capsys):
    LabelVideosConfig(input="in", output="out").validate()
    assert cli.main(["label-videos", "--input", "in", "--output", "out", "--segment-s", "0"]) == 2
    assert "segment_s" in capsys.readouterr().err
    sub = cli.build_parser()._subparsers._group_actions[0].choices["label-videos"].format_help()
    assert "--fps" in sub and "--overlap-s" in sub and "--checkpoint" in sub


def test_listed_names_become_inputs_or_say_why_not():
    assert input_row(Listed("/v/a.MP4", 10))["status"] == ""
    assert input_row(Listed("/v/a.txt", 10))["status"] == "unsupported"
    assert input_row(Listed("/v/l.mp4", problem="dangling_link", error="x"))["status"] == "dangling_link"
