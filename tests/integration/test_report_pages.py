"""The results pages that real runs write (report.html, by the session's preprocess,
synthesis and training runs) opened in a real headless Chromium: no console message, every
image decodes, the expected sections, a screenshot that shows them, and sortable columns.
The sweep's, evaluation's, prediction's and label-videos' pages are checked beside their
runs (test_tune, test_training, test_label_videos)."""
from __future__ import annotations

import json

import pytest

from fer_ray import storage
from tests.browser import check_page

pytestmark = pytest.mark.integration

PREPROCESS = ["Summary", "Status", "Contact sheet"]
TRAIN = ["Metrics", "Learning curves", "Confusion matrix", "Per-class recall"]


def test_preprocess_page(fer_shards, tmp_path):
    opened = check_page(fer_shards, tmp_path, PREPROCESS)
    assert "<h1>preprocess fer2013: " in opened.dom and "<td>ok</td>" in opened.dom


def test_clip_preprocess_page_lists_each_status_with_its_bad_inputs(baum2_clips, tmp_path):
    output, summary = baum2_clips
    opened = check_page(output, tmp_path, PREPROCESS)
    for status in summary["status"]:
        assert f"<td>{status}</td>" in opened.dom, status
    # the bad inputs conftest added, by name with their error
    for name in ("avi/090.avi: ", "avi/091.avi: ", "avi/092.avi: "):
        assert name in opened.dom, name


def test_synthesis_page(synthesized, tmp_path):
    output, summary = synthesized
    skipped = ["Skipped subjects"] if summary["subjects_skipped"] else []
    opened = check_page(output, tmp_path, ["Summary", "Status", *skipped, "Contact sheets"],
                        min_images=len(summary["contact_sheets"]))
    assert opened.images == len(summary["contact_sheets"])


def test_training_page_sorts_its_per_class_recall(training_job, tmp_path):
    opened = check_page(training_job.output, tmp_path, TRAIN, min_images=2, sort_by="recall")
    metrics = json.loads(storage.read_bytes(storage.join(training_job.output, "metrics.json")))
    recall = metrics["per_class_recall"]
    # ascending, stable, classes without a test face last: what the page's script did
    expected = sorted(metrics["class_names"], key=lambda name: (recall[name] is None, recall[name] or 0))
    assert opened.sorted_rows == expected
