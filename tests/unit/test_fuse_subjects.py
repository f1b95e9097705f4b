"""FuseSubjectsStage (the synthesis stage) called directly on batches, as Ray would; no Ray."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from fer_ray import labels, schema
from fer_ray.config import ConfigError, SynthesizeConfig
from fer_ray.stages.base import rows_batch
from fer_ray.stages.fusion import FuseSubjectsStage
from fer_ray.vision.synthetic_face import draw_face, identity_for


def face_row(subject: str, expression: str, take: int = 1, size: int = 48, **overrides) -> dict:
    image, points = draw_face(expression, identity_for(subject), size)
    row = {
        "sample_id": f"{subject}-{expression}-{take}", "dataset": "jaffe",
        "source_uri": f"/raw/{subject}.{expression}{take}.tiff", "subject": subject, "split": "train",
        "label_name": expression, "face_index": np.int16(0), "face": image.tobytes(),
        "face_shape": np.array([size, size, 1], np.int32), "landmarks": points.reshape(-1),
        "det_score": np.float32(1.0), "detector": "haar", "landmarker": "dlib",
    }
    row.update(overrides)
    return row


def run_stage(rows: list[dict], **options) -> tuple[list[dict], dict]:
    """(fused rows, {input sample_id: manifest row})."""
    table = FuseSubjectsStage(SynthesizeConfig(input="in", output="out", **options))(rows_batch(rows))
    assert table.schema == schema.MIXED_ROWS  # already the Parquet types: the writer passes the columns through
    out = table.to_pylist()
    manifest = {r["sample_id"]: r for r in out if r["is_manifest"]}
    assert len(manifest) == len(rows) and sum(r["is_manifest"] for r in out) == len(rows)  # every input once
    return [r for r in out if r["is_mixed"]], manifest


def test_a_complete_subject_gives_42_pairs_whose_index_decodes_back():
    fused, manifest = run_stage([face_row("KA", e) for e in labels.BASIC7])
    assert len(fused) == 42 and len({r["sample_id"] for r in fused}) == 42
    for row in fused:
        primary, secondary = labels.mixed_pair(int(row["mixed_label"]))
        assert (labels.CANONICAL[row["primary"]], labels.CANONICAL[row["secondary"]]) == (primary, secondary)
        assert row["label_name"] == f"{primary}+{secondary}"
        assert row["parent_primary"] == f"KA-{primary}-1" and row["parent_secondary"] == f"KA-{secondary}-1"
        assert len(row["face"]) == 48 * 48 and row["landmarker"] == "fused:region"
    assert {r["status"] for r in manifest.values()} == {"used"}
    assert all(r["n_mixed"] == 12 for r in manifest.values())  # 6 pairs as primary, 6 as secondary


def test_n_expressions_give_n_times_n_minus_one_and_pick_rules_choose_takes():
    rows = [face_row("KL", e, t) for e in ("anger", "happy", "sad") for t in (1, 2, 3)]
    first, manifest = run_stage(rows)
    assert len(first) == 3 * 2
    assert Counter(r["status"] for r in manifest.values()) == {"used": 3, "not_picked": 6}
    assert all(r["parent_primary"].endswith("-1") for r in first)  # the first take
    every, _ = run_stage(rows, pick="every")
    assert len(every) == 3 * 2 * 3 * 3
    random_a, _ = run_stage(rows, pick="random", pick_k=2, seed=5)
    random_b, _ = run_stage(rows, pick="random", pick_k=2, seed=5)
    assert len(random_a) == 3 * 2 * 2 * 2
    assert [r["sample_id"] for r in random_a] == [r["sample_id"] for r in random_b]  # same seed, same pick
    assert all(a["face"] == b["face"] for a, b in zip(random_a, random_b))


def test_subject_with_one_expression_is_skipped_and_reported():
    fused, manifest = run_stage([face_row("KM", "happy", t) for t in (1, 2)] + [face_row("KR", "sad"),
                                                                              face_row("KR", "fear")])
    assert len(fused) == 2 and {r["subject"] for r in fused} == {"KR"}
    lone = [r for r in manifest.values() if r["subject"] == "KM"]
    assert {r["status"] for r in lone} == {"lone_expression"}
    assert "1 usable basic expression(s) (happy)" in lone[0]["skip_reason"]


def test_bad_faces_are_reported_and_the_rest_still_fused():
    rows = [face_row("NA", e) for e in ("anger", "disgust", "fear")]
    rows += [
        face_row("NA", "happy", landmarks=np.full(136, np.nan, np.float32)),
        face_row("NA", "sad", size=64),                            # another crop size
        face_row("NA", "surprise", landmarker="fused:region"),     # a mixed face fed back in
        face_row("NA", "contempt"),                                # not one of the 7 basic
        face_row("", "neutral"),                                   # no subject at all
        face_row("NA", "neutral", face=b"\x00" * 10),              # bytes do not match the shape
    ]
    fused, manifest = run_stage(rows)
    assert len(fused) == 3 * 2
    status = {sid: r["status"] for sid, r in manifest.items()}
    assert status == {"NA-anger-1": "used", "NA-disgust-1": "used", "NA-fear-1": "used",
                      "NA-happy-1": "bad_landmarks", "NA-sad-1": "size_mismatch",
                      "NA-surprise-1": "already_mixed", "NA-contempt-1": "not_basic",
                      "-neutral-1": "no_subject", "NA-neutral-1": "size_mismatch"}
    assert "64x64x1" in manifest["NA-sad-1"]["error"] and "48x48x1" in manifest["NA-sad-1"]["error"]
    assert "NaN" in manifest["NA-happy-1"]["error"]


def test_mixed_faces_inherit_the_subjects_split():
    rows = [face_row("TM", e, split="test") for e in ("anger", "happy")]
    fused, _ = run_stage(rows)
    assert {r["split"] for r in fused} == {"test"}


def test_colour_faces_fuse():
    rows = []
    for e in ("anger", "happy"):
        image, points = draw_face(e, identity_for("UY"), 48, color=True)
        rows.append(face_row("UY", e, face=image.tobytes(), face_shape=np.array([48, 48, 3], np.int32),
                             landmarks=points.reshape(-1)))
    fused, _ = run_stage(rows, method="pca")
    assert len(fused) == 2 and all(len(r["face"]) == 48 * 48 * 3 for r in fused)
    assert all(abs(sum(r["weights"]) - 1) < 1e-6 for r in fused)


@pytest.mark.parametrize("options, message", [
    ({"method": "weighted"}, "alpha: method 'weighted' needs alpha in [0, 1]"),
    ({"method": "average"}, "method: 'average' is not valid; choose one of: region, weighted, pca"),
    ({"alpha": 0.3}, "alpha: only used by method 'weighted'"),
    ({"pick": "random"}, "pick_k: pick 'random' needs pick_k >= 1"),
    ({"pick": "best"}, "pick: 'best' is not valid; choose one of: first, every, random"),
    ({"feather": 1.5}, "feather: 1.5 must be in [0, 1)"),
    ({"input": ""}, "input: required"),
])
def test_inconsistent_options_are_named(options, message):
    cfg = SynthesizeConfig(input="in", output="out")
    for key, value in options.items():
        setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        cfg.validate()
