"""A `video_folder` tree (AFEW/DFEW-style class folders) into clips on Ray, local files in and
out: every file accounted for, labels through the synonym table, and a run killed midway that
resumes to the uninterrupted result, as image runs do (tests/integration/test_runs.py)."""
from __future__ import annotations

import os
from collections import Counter

import pytest

from fer_ray import labels
from fer_ray.sample_videos import baum2_clip, baum2_clips
from tests.integration.helpers import kill_cli_after_units, read_output, run_preprocess

pytestmark = pytest.mark.integration
FOLDER_NAMES = {"happy": "Happiness", "surprise": "surprised", "sad": "SAD", "anger": "angry"}  # synonyms
CLIPS_PER_FILE = 2  # many commit units from a small archive
BAD = {"angry/broken.mp4": b"\x00\x00\x00\x18ftypmp42 not really a video",
       "angry/notes.txt": b"not a video\n", "bored/001.avi": None}  # None: a real clip, unknown class


@pytest.fixture(scope="module")
def tree(tmp_path_factory, ray_cluster):
    """The sample archive's clips as `<class synonym>/<subject>_<clip>.avi`, with BAD beside them."""
    root = tmp_path_factory.mktemp("video-folder")
    clips = baum2_clips()
    for subject, stem, name in clips:
        folder = root / FOLDER_NAMES[name]
        folder.mkdir(exist_ok=True)
        (folder / f"{subject}_{stem}.avi").write_bytes(baum2_clip(subject, stem, name))
    for name, data in BAD.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data if data is not None else baum2_clip(*clips[0]))
    return root, len(clips)


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory):
    """An uninterrupted run: (summary, clips by id, manifest rows by file name)."""
    root, _ = tree
    output = str(tmp_path_factory.mktemp("video-folder-out") / "out")
    summary = run_preprocess("video_folder", str(root), output, rows_per_file=CLIPS_PER_FILE)
    return summary, clips_by_id(output), manifest_by_name(output, root)


def clips_by_id(output: str) -> dict:
    rows = read_output(output, "clips").to_pylist()
    assert len(rows) == len({row["clip_id"] for row in rows})  # no duplicates, ever
    return {row["clip_id"]: (row["frames"], row["valid"], row["label"], row["split"]) for row in rows}


def manifest_by_name(output: str, root) -> dict:
    rows = read_output(output, "manifest").to_pylist()
    names = [os.path.relpath(row["source_uri"].removeprefix("file://"), root) for row in rows]
    assert len(names) == len(set(names))
    return dict(zip(names, rows))


def test_every_file_of_a_class_folder_tree_is_accounted_for_and_labelled_by_synonym(tree, reference):
    root, n_clips = tree
    summary, clips, manifest = reference
    files = {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}
    assert set(manifest) == files and summary["inputs"] == len(files) == n_clips + len(BAD)
    assert manifest["angry/broken.mp4"]["status"] == "not_a_video"
    assert manifest["angry/notes.txt"]["status"] == "unsupported_format"
    assert manifest["bored/001.avi"]["status"] == "unknown_class" and "bored" in manifest["bored/001.avi"]["error"]
    good = {name: row for name, row in manifest.items() if name not in BAD}
    assert Counter(row["status"] for row in good.values())["ok"] >= n_clips - 2
    for name, row in good.items():  # the folder's synonym, as canonical label
        assert labels.label_name(row["label"]) == {v: k for k, v in FOLDER_NAMES.items()}[name.split("/")[0]], name
    assert len(clips) == summary["clips"] == sum(row["status"] == "ok" for row in manifest.values())
    assert {split for *_, split in clips.values()} == {"train", "val", "test"}  # split by file: no subjects


def test_a_killed_clip_run_resumes_to_the_uninterrupted_result(tree, reference, ray_cluster, tmp_path):
    root, _ = tree
    summary, clips, manifest = reference
    output = str(tmp_path / "out")
    args = ["preprocess", "--layout", "video_folder", "--input", str(root), "--output", output,
            "--batch-size", "8", "--rows-per-file", str(CLIPS_PER_FILE)]
    kill_cli_after_units(args, output, ray_cluster.address)

    resumed = run_preprocess("video_folder", str(root), output, rows_per_file=CLIPS_PER_FILE)
    assert resumed["run_state"] == "resumed" and resumed["units_skipped"] > 0
    assert resumed["units_skipped"] + resumed["units_run"] == resumed["inputs"] == summary["inputs"]
    assert clips_by_id(output) == clips
    assert {name: row["status"] for name, row in manifest_by_name(output, root).items()} == \
        {name: row["status"] for name, row in manifest.items()}
