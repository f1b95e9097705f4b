"""Synthesis end to end on the S3 test server: JAFFE-style sample -> preprocess (the submitted
preprocess job) -> synthesize -> read back with plain pyarrow -> train mixed_cnn on mixed/.
A rerun into the same output is checked by the synthesis job test (tests/jobs)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fer_ray import cli, labels, results, schema, storage
from fer_ray.config import ConfigError, SynthesizeConfig, TrainConfig
from fer_ray.pipelines import fusion_units, runs, synthesize
from tests.cluster import wait_for
from tests.integration.helpers import expected_pairs, read_output

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def region(synthesized):
    return synthesized


def test_mixed_count_is_the_sum_of_n_times_n_minus_one(region, jaffe_faces):
    output, summary = region
    faces = read_output(jaffe_faces, "faces").to_pylist()
    mixed = read_output(output, "mixed")
    assert mixed.schema.equals(schema.MIXED)
    assert mixed.num_rows == expected_pairs(faces) == summary["mixed"] > 0
    assert len(set(mixed["sample_id"].to_pylist())) == mixed.num_rows
    assert sum(summary["mixed_by_pair"].values()) == mixed.num_rows and len(summary["mixed_by_pair"]) == 42


def test_every_index_decodes_to_its_pair_and_its_parents(region, jaffe_faces):
    output, _ = region
    parents = {r["sample_id"]: r for r in read_output(jaffe_faces, "faces").to_pylist()}
    for row in read_output(output, "mixed").to_pylist():
        primary, secondary = labels.mixed_pair(row["mixed_label"])
        a, b = parents[row["parent_primary"]], parents[row["parent_secondary"]]
        assert (a["label_name"], b["label_name"]) == (primary, secondary)
        assert row["label_name"] == f"{primary}+{secondary}" and row["label"] == -1
        assert row["primary"] == labels.CANONICAL_INDEX[primary]
        assert row["secondary"] == labels.CANONICAL_INDEX[secondary]
        assert row["subject"] == a["subject"] == b["subject"] and row["split"] == a["split"] == b["split"]
        assert list(row["face_shape"]) == list(a["face_shape"]) and len(row["face"]) == len(a["face"])
        assert row["method"] == "region" and abs(sum(row["weights"]) - 1) < 1e-5
        points = schema.landmarks_array(row["landmarks"])
        # brows and eyes are the primary's; the mouth is the secondary's, moved by the alignment only
        upper = np.r_[17:27, 36:48]
        assert np.allclose(points[upper], schema.landmarks_array(a["landmarks"])[upper], atol=1e-3)
        assert np.abs(points[48:] - schema.landmarks_array(b["landmarks"])[48:]).max() < 4.0


def test_every_input_face_is_accounted_for(region, jaffe_faces):
    output, summary = region
    faces = read_output(jaffe_faces, "faces")
    manifest = read_output(output, "manifest")
    assert manifest.schema.equals(schema.MIXED_MANIFEST)
    assert sorted(manifest["sample_id"].to_pylist()) == sorted(faces["sample_id"].to_pylist())
    assert sum(manifest["n_mixed"].to_pylist()) == 2 * summary["mixed"]
    assert set(manifest["status"].to_pylist()) <= {"used", "not_picked"}  # clean sample data
    assert summary["subjects_skipped"] == {}
    assert summary["subjects_used"] == len(set(faces["subject"].to_pylist()))


def test_a_7x7_contact_sheet_per_sampled_subject(region):
    output, summary = region
    assert len(summary["contact_sheets"]) == 4
    for uri in summary["contact_sheets"]:
        sheet = Image.open(io.BytesIO(storage.read_bytes(uri)))
        tile = 48 * 3 + 2  # face upscaled 3x plus the 2 px gap
        assert sheet.format == "PNG" and sheet.size[0] == 7 * tile and sheet.size[1] > 7 * tile


def test_bad_faces_are_reported_not_fatal(jaffe_faces, region, bucket):
    """A subject with one expression, a face of another size, missing landmarks and fused
    faces fed back in: reported per face, the rest fused, every input accounted for."""
    faces = read_output(jaffe_faces, "faces").to_pylist()
    lone = "KA"
    rows = [r for r in faces if r["subject"] != lone or r["label_name"] == "happy"]
    odd = next(r for r in rows if r["subject"] == "KL" and r["label_name"] == "sad")
    odd["face"] = cv2.resize(schema.face_array(odd["face"], odd["face_shape"]), (64, 64)).tobytes()
    odd["face_shape"] = [64, 64, 1]
    blind = next(r for r in rows if r["subject"] == "KM" and r["label_name"] == "fear")
    blind["landmarks"] = [float("nan")] * 136
    nameless = [dict(r, subject="", sample_id=f"nameless-{i}") for i, r in enumerate(rows[:4])]
    rows += nameless  # faces of a layout without subjects: reported, their pixels never shuffled
    bad_input = f"{bucket}/synth/bad-input"
    refed = read_output(region[0], "mixed").slice(0, 3)  # mixed/ rows (a wider schema) in faces/
    results.commit_tables(bad_input, "preprocess", {"faces": [pa.Table.from_pylist(rows, schema=schema.FACES),
                                                              refed]})

    summary = synthesize.run(SynthesizeConfig(input=bad_input, output=f"{bucket}/synth/bad-output"))
    manifest = {r["sample_id"]: r for r in read_output(f"{bucket}/synth/bad-output", "manifest").to_pylist()}
    assert len(manifest) == len(rows) + 3
    assert manifest[odd["sample_id"]]["status"] == "size_mismatch"
    assert manifest[blind["sample_id"]]["status"] == "bad_landmarks"
    assert {manifest[r]["status"] for r in refed["sample_id"].to_pylist()} == {"already_mixed"}
    refed_ids = set(refed["sample_id"].to_pylist())
    assert {r["status"] for r in manifest.values() if r["subject"] == lone and r["sample_id"] not in refed_ids} == {
        "lone_expression"}
    assert {manifest[r["sample_id"]]["status"] for r in nameless} == {"no_subject"}
    assert "(happy)" in summary["subjects_skipped"][lone]
    assert summary["status"]["already_mixed"] == 3 and summary["subjects_used"] == 9
    good = [r for r in rows if r["subject"] not in (lone, "") and r is not odd and r is not blind]
    assert summary["mixed"] == expected_pairs(good)


def test_mixed_cnn_trains_on_the_mixed_shards(region, tmp_path):
    """The 42-class family reads mixed/ (on S3) by itself. One epoch: mixed_cnn has 7.2 M
    parameters, and learning is the training tests' business; the run goes to a local
    directory, as its 87 MB checkpoints would only test the S3 server's upload speed."""
    from fer_ray.training import trainer

    output, summary = region
    run = str(tmp_path / "mixed-cnn")
    report = trainer.run(TrainConfig(data=output, output=run, model="mixed_cnn", epochs=1, batch_size=32,
                                     workers=1, cpus_per_worker=1.0, resume=False))
    metrics = json.loads(storage.read_bytes(f"{run}/metrics.json"))
    assert metrics["n"] == summary["mixed_by_split"]["test"] == report["n"]
    assert list(metrics["per_class_recall"]) == list(labels.LABEL_SETS["mixed42"])
    assert metrics["epochs"] == 1


@pytest.mark.parametrize("args, message", [
    (["--method", "weighted"], "alpha: method 'weighted' needs alpha in [0, 1]"),
    (["--method", "blend"], "method: 'blend' is not valid; choose one of: region, weighted, pca"),
    (["--pick", "random"], "pick_k: pick 'random' needs pick_k >= 1"),
])
def test_inconsistent_options_fail_before_any_ray_work(args, message, jaffe_faces, bucket, capsys, monkeypatch):
    monkeypatch.setattr(synthesize, "fused_rows", lambda *a: pytest.fail("Ray work started"))
    code = cli.main(["synthesize", "--input", jaffe_faces, "--output", f"{bucket}/synth/never", *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not storage.exists(f"{bucket}/synth/never")


def test_input_that_is_not_a_preprocess_output_is_refused(region, jaffe_faces):
    output, _ = region
    with pytest.raises(ConfigError, match="holds mixed/ shards"):
        synthesize.run(SynthesizeConfig(input=output, output=output + "-again"))
    with pytest.raises(ConfigError, match="overlaps the input"):
        synthesize.run(SynthesizeConfig(input=jaffe_faces, output=jaffe_faces + "/"))


def is_plan(uri: str) -> bool:
    """A file of the run's unit plan (written beside the checkpoint before any fusing)."""
    return f"{fusion_units.PLAN_SUFFIX}/" in uri


def test_a_killed_synthesis_resumes_to_the_uninterrupted_result(region, jaffe_faces, ray_cluster, tmp_path):
    """Killed once a write has committed, the rerun skips the committed faces (one read path:
    its single checkpoint filter leaves the 2-CPU cluster room to run) and equals the
    uninterrupted run."""
    output = str(tmp_path / "mixed")
    driver = subprocess.Popen([sys.executable, "-m", "fer_ray.cli", "synthesize", "--input", jaffe_faces,
                               "--output", output, "--rows-per-file", "8"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    checkpoints = storage.join(output, results.CHECKPOINTS_DIR)
    try:
        wait_for(lambda: driver.poll() is not None or (storage.exists(checkpoints) and any(
            not u.endswith(runs.PENDING_FILE) and not is_plan(u) for u in storage.list_files(checkpoints))),
            300, "a committed write")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert not storage.exists(storage.join(output, "_commit.json"))
    resumed = synthesize.run(SynthesizeConfig(input=jaffe_faces, output=output, rows_per_file=8))
    assert resumed["run_state"] == "resumed" and resumed["units_skipped"] > 0
    assert resumed["units_skipped"] + resumed["units_run"] == resumed["inputs"] == region[1]["inputs"]
    for folder in ("mixed", "manifest"):
        ids = read_output(output, folder)["sample_id"].to_pylist()
        assert sorted(ids) == sorted(read_output(region[0], folder)["sample_id"].to_pylist())
        assert len(ids) == len(set(ids))
