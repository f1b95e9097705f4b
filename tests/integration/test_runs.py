"""Runs that never lose a result: check before touching, stage then commit, resume by units,
survive a lost worker. Real Ray (the session's head node), real files, the CLI as users meet it."""
from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from fer_ray import cli, lease, results, storage
from fer_ray.pipelines import runs
from tests.cluster import DONE, stage_actors, stage_batch_task, wait_for
from tests.integration.helpers import kill_cli_after_units, read_output, run_file, run_preprocess

pytestmark = pytest.mark.integration
SMALL_FILES = 16  # rows per output file: many commit units from the small sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory, ray_cluster):
    from fer_ray.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("runs-sample")
    write_sample_data(str(root), layouts=("jaffe", "folder"))
    return root


@pytest.fixture(scope="module")
def reference(sample, tmp_path_factory):
    """An uninterrupted run of the JAFFE-style sample: what every interrupted run must equal."""
    output = str(tmp_path_factory.mktemp("reference") / "out")
    run_preprocess("jaffe", str(sample / "jaffe"), output, rows_per_file=SMALL_FILES)
    return rows_by_id(output)


def rows_by_id(output: str) -> dict:
    faces = read_output(output, "faces").to_pylist()
    assert len(faces) == len({row["sample_id"] for row in faces})  # no duplicates, ever
    return {row["sample_id"]: (row["face"], row["landmarks"], row["split"]) for row in faces}


def snapshot(output: str) -> tuple[bytes, list[str]]:
    """What a reader sees: the commit marker and every file under the output."""
    return storage.read_bytes(storage.join(output, "_commit.json")), storage.list_files(output)


@pytest.fixture
def committed(sample, tmp_path):
    """An output holding a committed run of the folder-layout sample (38 images)."""
    output = str(tmp_path / "out")
    run_preprocess("folder", str(sample / "folder"), output)
    return output


@pytest.mark.parametrize("argv, message", [
    (["--input", "{empty}"], "input: no files under"),
    (["--input", "{file}"], "input: {file} is a file; layout 'folder' reads a directory"),
    (["--set", "split.train=nan"], "split.train"),
    (["--detect-every-s", "-1"], "detect_every_s: -1.0 must be a finite number of seconds >= 0"),
    (["--input", "{output}"], "output: {output} overlaps the input"),
    (["--input", "{output}/runs"], "overlaps the input"),
    (["--output", "{sample}/folder/out"], "overlaps the input"),
    (["--output", "s3://no-such-bucket-here/out"], "bucket 'no-such-bucket-here'"),
])
def test_bad_runs_fail_before_touching_the_committed_result(committed, sample, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"an image given where the layout reads a directory")
    names = {"empty": tmp_path / "empty", "file": tmp_path / "a.jpg", "output": committed, "sample": sample}
    before = snapshot(committed)
    args = {"--layout": "folder", "--input": str(sample / "folder"), "--output": committed}
    args.update(dict(zip(argv[::2], (value.format(**names) for value in argv[1::2]))))
    code = cli.main(["preprocess", *[part for pair in args.items() for part in pair]])
    err = capsys.readouterr().err
    assert code == 2 and message.format(**names) in err and len(err.strip().splitlines()) == 1
    assert snapshot(committed) == before
    assert not (sample / "folder" / "out").exists()


def test_a_changed_configuration_is_a_new_run_and_says_what_changed(committed, sample, capsys):
    first = results.read_commit(committed)
    capsys.readouterr()
    summary = run_preprocess("folder", str(sample / "folder"), committed, size=64)
    err = capsys.readouterr().err
    second = results.read_commit(committed)
    assert second.run != first.run and summary["run_state"] == "new"
    assert f"the committed run {first.run} stays until this one commits" in err and "face.size: 48 -> 64" in err
    assert storage.list_dirs(storage.join(committed, "runs")) == [second.run]  # the old run went after the commit
    assert {row["face_shape"][0] for row in read_output(committed, "faces").to_pylist()} == {64}


def test_a_run_of_the_same_configuration_is_up_to_date_and_restart_redoes_it(committed, sample):
    first, rows = results.read_commit(committed), rows_by_id(committed)
    again = run_preprocess("folder", str(sample / "folder"), committed)
    assert again["run_state"] == "up to date" and results.read_commit(committed).run == first.run
    redone = run_preprocess("folder", str(sample / "folder"), committed, restart=True)
    assert redone["run_state"] == "restarted" and redone["run"] != first.run
    assert rows_by_id(committed) == rows and redone["inputs"] == read_output(committed, "manifest").num_rows


def test_a_killed_run_is_never_read_and_resumes_to_the_uninterrupted_result(sample, reference, ray_cluster,
                                                                            tmp_path, capsys):
    output = str(tmp_path / "out")
    args = ["preprocess", "--layout", "jaffe", "--input", str(sample / "jaffe"), "--output", output,
            "--rows-per-file", str(SMALL_FILES), "--workers", "1"]  # one face actor: the run outlasts a unit
    kill_cli_after_units(args, output, ray_cluster.address)
    # readers refuse the partial output instead of taking it for a finished one
    capsys.readouterr()
    assert cli.main(["train", "--data", output, "--output", str(tmp_path / "run")]) == 2
    assert cli.main(["synthesize", "--input", output, "--output", str(tmp_path / "mixed")]) == 2
    err = capsys.readouterr().err
    assert err.count("holds no committed result yet: a run writing there was interrupted") == 2

    # One commit cut in half, as an S3 outage leaves it (Ray's move is a copy, then a delete
    # of the pending file): the task is committed yet its pending file stayed. Ray's cleanup
    # of pending tasks would delete its files while its inputs are skipped as committed.
    half_moved = next(uri for uri in storage.list_files(storage.join(output, results.CHECKPOINTS_DIR))
                      if not uri.endswith(runs.PENDING_FILE))
    storage.write_bytes(half_moved.removesuffix(".parquet") + runs.PENDING_FILE, storage.read_bytes(half_moved))

    resumed = run_preprocess("jaffe", str(sample / "jaffe"), output, rows_per_file=SMALL_FILES)
    assert resumed["run_state"] == "resumed" and resumed["units_skipped"] > 0
    assert resumed["units_skipped"] + resumed["units_run"] == resumed["inputs"] == 177
    assert rows_by_id(output) == reference
    assert read_output(output, "manifest").num_rows == 177
    assert not storage.exists(storage.join(output, results.CHECKPOINTS_DIR))  # dropped by the commit


def test_a_stopped_run_says_so_in_one_line_leaves_no_lease_and_resumes(sample, reference, ray_cluster, tmp_path):
    """SIGTERM (`ray job stop`, a scheduler's kill): the driver still cleans up (its lease
    released, so the next run needs no stale-lease check), says what happened in one line,
    exits 143, and the same command resumes the run to the uninterrupted result."""
    output = str(tmp_path / "out")
    args = ["preprocess", "--layout", "jaffe", "--input", str(sample / "jaffe"), "--output", output,
            "--rows-per-file", str(SMALL_FILES), "--workers", "1"]
    code, said = kill_cli_after_units(args, output, ray_cluster.address, sig=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert said.strip().splitlines()[-1].startswith(
        "fer-ray preprocess: stopped by SIGTERM; the same command again resumes an unfinished run (details: ")
    assert not storage.exists(lease.lease_uri(output))

    resumed = run_preprocess("jaffe", str(sample / "jaffe"), output, rows_per_file=SMALL_FILES)
    assert resumed["run_state"] == "resumed" and resumed["units_skipped"] > 0
    assert rows_by_id(output) == reference


def face_batches_in_hand(dashboard: str) -> bool:
    """Whether a face actor holds a batch of this driver's (running it, or queued there)."""
    import ray
    from ray.util.state import list_tasks

    filters = [("job_id", "=", ray.get_runtime_context().get_job_id()), ("name", "=", stage_batch_task("FaceStage"))]
    tasks = list_tasks(address=dashboard, filters=filters, limit=10_000, raise_on_missing_output=False)
    return any(task.state not in DONE for task in tasks)


def test_a_face_actor_killed_mid_run_loses_no_input(sample, reference, ray_cluster, tmp_path):
    output = str(tmp_path / "out")
    outcome = {}
    # One face actor, the run's bottleneck: it gets the input's blocks one after another, so when
    # it holds its first, the rest are still to come, and the run cannot finish unless Ray brings
    # it back. (Waiting for a committed unit raced the run's end: its writes can all come last.)
    driver = threading.Thread(target=lambda: outcome.update(summary=run_preprocess(
        "jaffe", str(sample / "jaffe"), output, rows_per_file=SMALL_FILES, workers=1)), daemon=True)
    driver.start()
    wait_for(lambda: face_batches_in_hand(ray_cluster.dashboard) or not driver.is_alive(), 300,
             "a batch handed to the face actor")
    victims = stage_actors("FaceStage")
    assert victims and driver.is_alive()
    victims[0].kill()
    driver.join(timeout=600)
    summary = outcome["summary"]
    assert summary["inputs"] == 177 and summary["status"] == {"ok": 177}
    assert rows_by_id(output) == reference


def test_every_listed_name_gets_one_manifest_row(sample, tmp_path):
    root = tmp_path / "photos"
    (root / "happiness").mkdir(parents=True)
    good = sorted((sample / "folder" / "happiness").iterdir())[:3]
    for path in good:
        (root / "happiness" / path.name).write_bytes(path.read_bytes())
    (root / "happiness" / "same.jpg").symlink_to(root / "happiness" / good[0].name)
    (root / "twice").symlink_to(root / "happiness")      # would list every face again
    (root / "happiness" / "loop").symlink_to(root)       # would never end
    (root / "happiness" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "happiness" / "notes.txt").write_text("not an image")
    from PIL import Image
    Image.open(good[0]).save(root / "happiness" / "animated.gif")
    with open(os.path.join(os.fsencode(root / "happiness"), b"caf\xe9.jpg"), "wb") as f:
        f.write(good[1].read_bytes())
    output = str(tmp_path / "out")
    summary = run_preprocess("folder", str(root), output)
    manifest = {os.path.relpath(r["source_uri"], root): r for r in read_output(output, "manifest").to_pylist()}
    assert len(manifest) == summary["inputs"] == 10
    status = {name: row["status"] for name, row in manifest.items()}
    assert status["twice"] == status["happiness/loop"] == "not_followed"
    assert status["happiness/gone.jpg"] == "dangling_link"
    assert status["happiness/notes.txt"] == "unsupported_format"
    assert status["happiness/caf\\xe9.jpg"] == "bad_name" and "UTF-8" in manifest["happiness/caf\\xe9.jpg"]["error"]
    assert status["happiness/same.jpg"] in ("ok", "no_face") and status["happiness/animated.gif"] in ("ok", "no_face")
    faces = read_output(output, "faces").to_pylist()
    assert len({r["source_uri"] for r in faces}) == sum(s == "ok" for s in status.values())
    summary_file = json.loads(storage.read_bytes(run_file(output, "_summary.json")))
    assert sum(summary_file["status"].values()) == 10
