"""Resumable video labelling: a rerun into the same output takes the videos the committed run
labelled, unchanged, from it and labels only the changed and new ones; a killed run resumes
to every video exactly once; a failed run leaves the committed result as it was. Real Ray,
real PyAV, tiny synthetic-face videos (tests/video_faces.py) cut into 2 s segments."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from fer_ray import cli, results, storage
from tests import video_faces
from tests.cluster import stage_actors, wait_for, without_ray_data_io_retries
from tests.integration.helpers import read_output, run_file

pytestmark = pytest.mark.integration

ARGS = ["--checkpoint", "pretrained", "--segment-s", "2", "--fps", "5", "--annotate", "1"]  # a.mp4 annotated
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    """Three tiny videos: a face changing expression, two faces, no face."""
    folder = tmp_path_factory.mktemp("resume-videos")
    video_faces.expression_change(folder / "a.mp4", seconds=3.0)
    video_faces.two_faces(folder / "b.mp4", seconds=3.0)
    video_faces.no_face(folder / "c.mp4", seconds=2.0)
    return folder


def copy_of(originals: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "videos"
    shutil.copytree(originals, folder)
    return folder


def label(videos: Path, output: str, *extra: str) -> int:
    return cli.main(["label-videos", "--input", str(videos), "--output", output, *ARGS, *extra])


def rows_of(output: str, folder: str) -> dict[str, list[dict]]:
    """A committed folder's rows by video file name, each video's frames in a stable order."""
    rows: dict[str, list[dict]] = {}
    for row in read_output(output, folder).to_pylist():
        rows.setdefault(row["video_uri"].rsplit("/", 1)[-1], []).append(row)
    return {name: sorted(found, key=lambda r: (r.get("track_id", 0), r.get("timestamp_s", 0.0)))
            for name, found in rows.items()}


def summary_of(output: str) -> dict:
    import json

    return json.loads(storage.read_bytes(run_file(output, "_summary.json")))


def check_each_video_once(output: str, names: set[str]) -> dict[str, dict]:
    videos = rows_of(output, "videos")
    assert {name: len(rows) for name, rows in videos.items()} == {name: 1 for name in names}
    frames = read_output(output, "frames").to_pylist()
    keys = Counter((r["video_uri"], r["track_id"], r["timestamp_s"]) for r in frames)
    assert frames and max(keys.values()) == 1  # no frame twice
    for name, (video,) in videos.items():
        assert video["n_faces"] == len(rows_of(output, "frames").get(name, [])), name
    return {name: rows[0] for name, rows in videos.items()}


@pytest.fixture(scope="module")
def committed(ray_cluster, originals, tmp_path_factory) -> tuple[Path, str]:
    """A committed run of the three videos (its own copy of them, changed by the tests)."""
    root = tmp_path_factory.mktemp("resume-committed")
    videos, output = copy_of(originals, root), str(root / "out")
    assert label(videos, output) == 0
    return videos, output


def test_a_rerun_labels_only_the_changed_and_the_new_videos(committed, capsys):
    videos, output = committed
    before_frames, before = rows_of(output, "frames"), check_each_video_once(output, {"a.mp4", "b.mp4", "c.mp4"})
    first = results.read_commit(output)
    assert before["c.mp4"]["status"] == "no_face" and not any(v["carried"] for v in before.values())
    assert before["a.mp4"]["annotated"] and not before["b.mp4"]["annotated"]
    old_files = {name: storage.read_bytes(before[name]["webvtt"]) for name in ("a.mp4", "b.mp4")}
    old_mp4 = storage.read_bytes(before["a.mp4"]["annotated"])
    video_faces.expression_change(videos / "c.mp4", seconds=2.0)  # changed: now a face
    video_faces.no_face(videos / "d.mp4", seconds=2.0)            # new
    capsys.readouterr()
    assert label(videos, output) == 0
    assert "2 of 4 videos unchanged since the committed run are carried over" in capsys.readouterr().err
    after = check_each_video_once(output, {"a.mp4", "b.mp4", "c.mp4", "d.mp4"})
    assert {name: v["carried"] for name, v in after.items()} == {
        "a.mp4": True, "b.mp4": True, "c.mp4": False, "d.mp4": False}
    summary = summary_of(output)
    assert summary["videos_carried"] == summary["units_carried"] == 2 and summary["inputs"] == 4
    assert summary["frames_decoded"] == after["c.mp4"]["frames_sampled"] + after["d.mp4"]["frames_sampled"] > 0
    # the carried videos are what the committed run wrote, the changed one reflects its new content
    after_frames = rows_of(output, "frames")
    for name in ("a.mp4", "b.mp4"):
        assert after_frames[name] == before_frames[name], name
        assert rows_of(output, "tracks")[name] and after[name]["n_tracks"] == before[name]["n_tracks"]
        assert {k: v for k, v in after[name].items() if k not in ("carried", "webvtt", "annotated")} == {
            k: v for k, v in before[name].items() if k not in ("carried", "webvtt", "annotated")}
    assert after["c.mp4"]["status"] == "ok" and after["c.mp4"]["n_tracks"] == 1 and after_frames["c.mp4"]
    assert after["d.mp4"]["status"] == "no_face"
    # the old run is gone after the commit; the carried videos' files were copied into the new one
    commit = results.read_commit(output)
    assert commit.run != first.run and storage.list_dirs(storage.join(output, "runs")) == [commit.run]
    for name in ("a.mp4", "b.mp4"):
        webvtt = after[name]["webvtt"]
        assert f"/runs/{commit.run}/webvtt/" in webvtt
        assert storage.read_bytes(webvtt) == old_files[name] and old_files[name].startswith(b"WEBVTT")
        assert storage.exists(webvtt.replace("/webvtt/", "/timelines/")[:-4] + ".png")
    # the first video's annotated MP4 is carried too, the others have none
    annotated = after["a.mp4"]["annotated"]
    assert f"/runs/{commit.run}/annotated/" in annotated and storage.read_bytes(annotated) == old_mp4
    assert not any(after[name]["annotated"] for name in ("b.mp4", "c.mp4", "d.mp4"))


def test_a_killed_run_resumes_to_every_video_labelled_once(ray_cluster, originals, tmp_path):
    """The driver is killed once the segment actors work: every video's decoding, the per-video
    reduce and all writes are still ahead (waiting for a committed video instead would race
    the end of a run this small, whose writes all come after the reduce)."""
    videos, output = copy_of(originals, tmp_path), str(tmp_path / "out")
    for k in range(3):
        shutil.copy(originals / "c.mp4", videos / f"more-{k}.mp4")
    args = ["label-videos", "--input", str(videos), "--output", output, *ARGS, "--rows-per-file", "1"]
    earlier = {process.pid for process in stage_actors("SegmentStage")}  # an earlier run's, if not gone yet
    driver = subprocess.Popen([sys.executable, "-m", "fer_ray.cli", *args], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    try:
        wait_for(lambda: {p.pid for p in stage_actors("SegmentStage")} - earlier or driver.poll() is not None, 300,
                 "this run's segment actors")
        assert driver.poll() is None, "the run ended before the segment actors were seen"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert storage.exists(run_file_of_uncommitted(output)) and not storage.exists(
        storage.join(output, results.COMMIT_FILE))
    assert label(videos, output, "--rows-per-file", "1") == 0
    summary = summary_of(output)
    assert summary["run_state"] == "resumed"  # the killed run's staged directory is taken up again
    assert summary["units_skipped"] + summary["units_run"] == summary["inputs"] == 6
    check_each_video_once(output, {path.name for path in videos.iterdir()})


def run_file_of_uncommitted(output: str) -> str:
    """The run.json of the one run staged under the output."""
    (run,) = storage.list_dirs(storage.join(output, "runs"))
    return storage.join(output, "runs", run, "run.json")


def test_failed_runs_leave_the_committed_result_as_it_was(ray_cluster, s3_server, bucket, originals, capsys):
    source, output = f"{bucket}/resume-videos/in", f"{bucket}/resume-videos/out"
    for path in originals.iterdir():
        storage.write_bytes(f"{source}/{path.name}", path.read_bytes())
    assert cli.main(["label-videos", "--input", source, "--output", output, *ARGS]) == 0
    marker = storage.join(output, results.COMMIT_FILE)
    before, frames = storage.read_bytes(marker), read_output(output, "frames")
    etags = {name: v["etag"] for name, (v,) in rows_of(output, "videos").items()}
    assert all(etag.strip('"') for etag in etags.values())  # S3 objects record their ETag
    # a bad configuration: nothing touched
    capsys.readouterr()
    assert cli.main(["label-videos", "--input", source, "--output", output, "--checkpoint", "/no/such.pt"]) == 2
    assert "checkpoint" in capsys.readouterr().err and storage.read_bytes(marker) == before
    # storage gone mid-run, past the retries: the run fails, the committed result stays
    storage.write_bytes(f"{source}/d.mp4", (originals / "a.mp4").read_bytes())
    impatient = ["--storage-attempts", "2", "--storage-backoff-s", "0.1", "--storage-max-backoff-s", "0.1"]
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(code=cli.main(
        ["label-videos", "--input", source, "--output", output, *ARGS, *impatient])), daemon=True)
    with without_ray_data_io_retries():
        thread.start()
        runs = storage.join(output, results.RUNS_DIR)
        wait_for(lambda: len(storage.list_dirs(runs)) > 1 or not thread.is_alive(), 300, "the new run to be staged")
        s3_server.stop()
        try:
            thread.join(timeout=300)
        finally:
            s3_server.start()
    assert not thread.is_alive() and outcome.get("code") == 1, outcome
    assert storage.read_bytes(marker) == before
    assert read_output(output, "frames").equals(frames)


def test_the_probe_carries_an_object_only_while_its_etag_is_the_committed_one(s3_server, bucket, originals):
    from fer_ray import schema
    from fer_ray.config import PreprocessConfig, RetryConfig
    from fer_ray.stages.base import rows_batch
    from fer_ray.stages.video import ProbeStage, SegmentSettings

    uri = f"{bucket}/resume-videos/probe/a.mp4"
    storage.write_bytes(uri, (originals / "a.mp4").read_bytes())
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as source:
        etag = source.metadata()["ETag"].decode()
    face = PreprocessConfig(layout="folder", input="unused", output="unused")
    stage = ProbeStage(SegmentSettings(face, 5, 2, 0.5, 2, 10**8, 0.3, 1, RetryConfig()))

    def probed(committed_etag: str) -> list[dict]:
        row = schema.row(schema.VIDEO_INPUTS, video_uri=uri, size=1000, mtime_ns=1, carried=True,
                         etag=committed_etag)
        return stage(rows_batch([row])).to_pylist()

    (same,) = probed(etag)
    assert same["carried"] and same["segment_index"] == -1 and same["etag"] == etag and not same["status"]
    other = probed('"another-object"')  # rewritten since: probed and cut into segments again
    assert [r["segment_index"] for r in other] == [0, 1] and not any(r["carried"] for r in other)
    assert {r["etag"] for r in other} == {etag}
