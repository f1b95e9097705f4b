"""`ray job submit` of jobs/label_videos.py to a real head node, with the videos on the S3 test
server and the output there too: the same inputs as tests/integration/test_label_videos.py
(labelled alike), plus a longer video, to show that objects are read by range, never downloaded
whole (the server records every GET it answers)."""
from __future__ import annotations

import json
import pathlib

import pytest

from fer_ray import storage
from fer_ray.vision.video import READ_BLOCK
from tests.integration.helpers import run_file
from tests.integration.test_label_videos import ARGS, by_name, check_outputs, webvtt_cues, write_inputs
from tests.videos import write_video

pytestmark = pytest.mark.job
ROOT = pathlib.Path(__file__).resolve().parents[2]
LONG = "long.mp4"  # 12 s of noisy frames, about 3 MB: six segments of 2 s, keyframes every 2 s


@pytest.fixture(scope="module")
def submitted(ray_cluster, s3_server, bucket, tmp_path_factory):
    folder = write_inputs(tmp_path_factory.mktemp("job-videos"))
    write_video(folder / LONG, frames=240, rate=20, noise=60, options={"g": "40"}, width=240, height=180)
    source, output = f"{bucket}/label-videos-job/in", f"{bucket}/label-videos-job/out"
    sizes = {}
    for path in sorted(folder.iterdir()):
        sizes[path.name] = len(path.read_bytes())
        storage.write_bytes(f"{source}/{path.name}", path.read_bytes())
    first = len(s3_server.served)
    done = ray_cluster.submit(["python", "jobs/label_videos.py", "--input", source, "--output", output, *ARGS],
                              working_dir=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    source_path = source.replace("s3://", "/")
    reads = [r for r in s3_server.served[first:] if r.path.startswith(source_path + "/")]
    return output, done, sizes, reads, source_path


def test_submitted_job_labels_the_videos_on_s3_alike(submitted):
    output, done, sizes, _, _ = submitted
    assert "succeeded" in done.stdout + done.stderr
    videos = by_name(output, "videos")
    long = videos.pop(LONG)[0]
    # (Haar may take a patch of the noise for a face: either status is right)
    assert long["status"] in ("ok", "no_face") and long["n_segments"] == 6 and long["frames_sampled"] == 60
    check_outputs(output, without=(LONG,))
    assert webvtt_cues(by_name(output, "videos")["two_faces.mp4"][0]["webvtt"])
    summary = json.loads(storage.read_bytes(run_file(output, "_summary.json")))
    assert summary["inputs"] == len(sizes)


def test_videos_are_read_by_range_never_whole(submitted):
    _, _, sizes, reads, source_path = submitted
    whole = [r for r in reads if not r.range]
    assert not whole, whole[:3]
    long = [r.size for r in reads if r.path == f"{source_path}/{LONG}"]
    # the probe and six segments each read their part, in blocks of at most READ_BLOCK bytes
    assert READ_BLOCK < sizes[LONG] / 2 and len(long) >= 7 and max(long) <= READ_BLOCK, (long, sizes[LONG])
