"""Results pages built from output folders on local disk (no Ray, no browser): what each
section holds, that values are escaped and images inlined byte for byte. The pages of real
runs are opened in Chromium by tests/integration/test_report_pages.py."""
from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np
import pyarrow as pa
import pytest
import yaml

from fer_ray import cli, reports, results, schema
from fer_ray.reports import html, pages
from fer_ray.training.metrics import confusion_png, learning_curve_png, summarise, trials_png

CLASSES = ["anger", "happy", "sad"]


def headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def inlined_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_values_are_escaped_and_numbers_sort_by_their_exact_value():
    page = html.Page("<b>title</b>", "sub & line")
    page.add("Table", html.table(["name", "score"], [["<script>x</script>", 0.123456789], ["b", None]],
                                 sortable=True))
    out = html.render(page)
    assert "<script>x</script>" not in out and "&lt;script&gt;x&lt;/script&gt;" in out
    assert "&lt;b&gt;title&lt;/b&gt;" in out and "sub &amp; line" in out
    assert '<td class="num" data-value="0.123456789">0.1235</td>' in out  # shown rounded, sorted exactly
    assert '<table class="sortable">' in out and out.count("<script>") == 1  # the sort script only
    assert "http" not in out.replace("http-equiv", "")  # nothing fetched


@pytest.fixture
def train_output(tmp_path):
    """A training output as trainer.finish leaves it: metrics.json with its history and the two plots."""
    confusion = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1), "val_accuracy": 0.3 * e,
                "val_macro_f1": 0.25 * e} for e in range(3)]
    metrics = {"model": "baseline_cnn", "split": "test", "epoch": 2, **summarise(confusion, CLASSES),
               "confusion": confusion.tolist(), "class_names": CLASSES, "history": history, "best_epoch": 2}
    files = {"metrics.json": json.dumps(metrics).encode(), "learning_curve.png": learning_curve_png(history),
             "confusion.png": confusion_png(confusion, CLASSES, "baseline_cnn on test")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path, files


def test_a_training_page_has_its_metrics_plots_and_per_class_recall(train_output):
    output, files = train_output
    page = open(reports.write(str(output))).read()
    assert headings(page) == ["Metrics", "Learning curves", "Confusion matrix", "Per-class recall"]
    assert inlined_images(page) == [files["learning_curve.png"], files["confusion.png"]]
    assert "train baseline_cnn: macro-F1 0.873 on test (8 faces)" in page  # (6/7 + 8/9) / 2: sad has no F1
    recall = re.search(r"<h2>Per-class recall</h2>(.*?)</table>", page, re.S).group(1)
    assert re.findall(r"<tr><td>(\w+)</td>", recall) == CLASSES
    assert '<td class="num" data-value="0.75">0.75</td>' in recall  # anger: 3 of 4
    assert "<tr><td>sad</td><td></td>" in recall  # no test face: no recall, not 0


def test_an_evaluation_page_has_no_learning_curves(train_output):
    output, _ = train_output
    metrics = json.loads((output / "metrics.json").read_text())
    del metrics["history"]
    (output / "metrics.json").write_text(json.dumps(metrics))
    assert headings(html.render(pages.build(str(output)))) == ["Metrics", "Confusion matrix", "Per-class recall"]


def test_a_sweep_page_has_its_plot_a_sortable_trials_table_and_the_best_config(tmp_path):
    rows = "trial,model,lr,batch_size,epochs_run,best_val_macro_f1,status\n" \
           "t2,baseline_cnn,0.001,32,4,0.61,ok\nt1,landmark_mlp,0.01,16,2,0.25,ok\nt3,enm,0.1,16,1,,error\n"
    (tmp_path / "results.csv").write_text(rows)
    plot = trials_png({"t2": [{"training_iteration": 1, "val_macro_f1": 0.61}]}, "val_macro_f1", {"t2": "t2"})
    (tmp_path / "trials.png").write_bytes(plot)
    (tmp_path / "best_config.yaml").write_text(yaml.safe_dump({"model": "baseline_cnn", "lr": 0.001}))
    page = html.render(pages.build(str(tmp_path)))
    assert headings(page) == ["Trials plot", "Trials", "Best config"]
    assert inlined_images(page) == [plot]
    table = re.search(r'<table class="sortable">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<tr><td>(t\d)</td>", table) == ["t2", "t1", "t3"]
    assert "<th>best_val_macro_f1</th>" in table and 'data-value="0.61"' in table
    assert "model: baseline_cnn" in page


def test_a_status_table_counts_each_status_with_examples_of_its_inputs(tmp_path):
    """At most three examples per status that is not ok, each with its error when it has one."""
    names = ["ok"] * 4 + ["decode_error"] * 5 + ["no_face"]
    manifest = pa.Table.from_pylist([
        {"source_uri": f"s3://b/raw/{status}-{i}.jpg", "dataset": "folder", "status": status,
         "error": f"bad bytes {i}" if status == "decode_error" else "", "n_faces": int(status == "ok"),
         "label": 0, "subject": "", "split": "train"} for i, status in enumerate(names)], schema=schema.MANIFEST)
    output = str(tmp_path / "out")
    commit = results.commit_tables(output, "preprocess", {"manifest": [manifest]})
    summary = {"layout": "folder", "inputs": 10, "faces": 4, "status": {"ok": 4, "decode_error": 5, "no_face": 1}}
    (tmp_path / "out" / "runs" / commit.run / "_summary.json").write_text(json.dumps(summary))
    page = open(reports.write(output)).read()
    assert headings(page) == ["Summary", "Status", "Contact sheet"]
    status = re.search(r"<h2>Status</h2>(.*?)</table>", page, re.S).group(1)
    rows = re.findall(r"<tr><td>(\w+)</td><td[^>]*>(\d+)</td><td>([^<]*)</td><td>(.*?)</td></tr>", status)
    assert [(name, int(count)) for name, count, _, _ in rows] == [("decode_error", 5), ("ok", 4), ("no_face", 1)]
    examples = {name: shown.split("<br>") for name, _, _, shown in rows}
    assert examples["decode_error"] == [f"raw/decode_error-{i}.jpg: bad bytes {i}" for i in (4, 5, 6)]
    assert examples["no_face"] == ["raw/no_face-9.jpg"] and examples["ok"] == [""]
    assert rows[0][2] == schema.Status.DECODE_ERROR.description
    assert "none written" in page  # no contact sheet: said, not a broken image


def test_report_of_a_folder_without_results_exits_2_naming_what_it_looked_for(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err
    for looked_for in ("_commit.json", "results.csv", "metrics.json"):
        assert looked_for in err
    assert not (tmp_path / reports.PAGE_FILE).exists()


def test_a_page_that_cannot_be_built_after_a_run_is_a_warning_not_a_failure(tmp_path, caplog):
    assert reports.write_after_run(str(tmp_path)) == ""
    assert "results page" in caplog.text and not (tmp_path / reports.PAGE_FILE).exists()


def test_a_labelling_page_shows_the_timelines_of_videos_with_faces_first_and_counts_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "MAX_TIMELINES", 2)
    videos = [("a.mp4", 0, "ok"), ("b.mp4", 2, "ok"), ("c.mp4", 1, "ok"), ("d.mp4", 0, "not_a_video")]
    table = pa.Table.from_pylist([
        {"video_uri": f"/in/{name}", "status": status, "error": "" if status == "ok" else "not a container",
         "n_tracks": tracks, "webvtt": f"/out/runs/r/webvtt/{name}-1.vtt" if status == "ok" else ""}
        for name, tracks, status in videos], schema=schema.VIDEOS)
    output = str(tmp_path / "out")
    commit = results.commit_tables(output, "label-videos", {"videos": [table]})
    run = tmp_path / "out" / "runs" / commit.run
    (run / "_summary.json").write_text(json.dumps({"inputs": 4, "status": {"ok": 3, "not_a_video": 1}}))
    (run / "timelines").mkdir()
    pngs = {}
    for name, _, _ in videos[:3]:
        pngs[name] = cv2.imencode(".png", np.full((4, 4, 3), len(pngs) * 60, np.uint8))[1].tobytes()
        (run / "timelines" / f"{name}-1.png").write_bytes(pngs[name])
    page = open(reports.write(output)).read()
    assert headings(page) == ["Summary", "Status", "Videos", "Timelines"]
    assert inlined_images(page) == [pngs["b.mp4"], pngs["c.mp4"]]  # most tracks first
    assert "1 more timelines are not shown" in page
    assert "in/d.mp4: not a container" in page and schema.VideoStatus.NOT_A_VIDEO.description in page
