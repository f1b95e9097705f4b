"""One results page per kind of output, built from the files the job wrote (nothing else).

A committed output (`_commit.json`: preprocess, synthesize, label-videos, predict) is read
through its commit: the run's `_summary.json`, its manifest (or videos/) for the status
table, its contact sheets and timelines. A training or evaluation output is its
`metrics.json`, `learning_curve.png` and `confusion.png`; a sweep is its `results.csv`,
`trials.png` and `best_config.yaml`.
"""
from __future__ import annotations

import io
import json
import posixpath

import pandas as pd
import pyarrow.compute as pc

from fer_ray import results, storage
from fer_ray.config import ConfigError
from fer_ray.reports import html
from fer_ray.reports.html import Page
from fer_ray.schema import MixedStatus, Status, VideoStatus

MAX_EXAMPLES = 3  # example inputs shown per status
MAX_TIMELINES = 24  # per-video timelines inlined; the rest are counted in a note
MAX_VIDEO_ROWS = 500
# what counts as fine per job: its inputs get no example rows
GOOD_STATUSES = {str(Status.OK), str(MixedStatus.USED)}
LOOKED_FOR = (f"{results.COMMIT_FILE} (preprocess, synthesize, label-videos, predict), results.csv (tune) or "
              f"metrics.json (train, evaluate)")


class NoResults(ConfigError):
    """The folder holds nothing a results page can be made of."""


def build(output: str) -> Page:
    """The page of whatever job wrote `output`, found by what is there."""
    commit = results.read_commit(output)
    if commit is not None:
        builder = COMMITTED_PAGES.get(commit.job)
        if builder is None:
            raise NoResults(f"output: {output} holds a {commit.job} result, which has no results page")
        return builder(commit)
    if storage.exists(storage.join(output, "results.csv")):
        return tune_page(output)
    if storage.exists(storage.join(output, "metrics.json")):
        return metrics_page(output)
    raise NoResults(f"output: {output} holds no fer-ray output: looked for {LOOKED_FOR}")


# ---------------------------------------------------------------- committed jobs

def preprocess_page(commit: results.Commit) -> Page:
    summary = read_summary(commit)
    clips = "clips" in commit.files
    made = f"{summary.get('clips', 0)} clips" if clips else f"{summary.get('faces', 0)} faces"
    page = Page(f"preprocess {summary.get('layout', '')}: {summary.get('inputs', 0)} inputs -> {made}",
                run_line(commit, summary))
    page.add("Summary", html.key_values(summary_fields(summary)))
    page.add("Status", status_table(summary.get("status", {}), commit, "manifest", "source_uri"))
    page.add("Contact sheet", pictures([commit.run_uri("contact_sheet.png")],
                                       "film strips of the first clips" if clips else "the first aligned faces"))
    return page


def synthesize_page(commit: results.Commit) -> Page:
    summary = read_summary(commit)
    page = Page(f"synthesize {summary.get('method', '')}: {summary.get('inputs', 0)} faces -> "
                f"{summary.get('mixed', 0)} mixed faces", run_line(commit, summary))
    page.add("Summary", html.key_values(summary_fields(summary, skip=("mixed_by_subject", "subjects_skipped"))))
    page.add("Status", status_table(summary.get("status", {}), commit, "manifest", "source_uri", (MixedStatus,)))
    skipped = summary.get("subjects_skipped", {})
    if skipped:
        page.add("Skipped subjects", html.table(["subject", "why"], [[s, r] for s, r in skipped.items()]))
    page.add("Contact sheets", pictures(png_files(commit.run_uri("contact_sheets")), "a subject's mixed faces"))
    return page


def label_videos_page(commit: results.Commit) -> Page:
    summary = read_summary(commit)
    page = Page(f"label-videos: {summary.get('inputs', 0)} videos -> {summary.get('tracks', 0)} tracks, "
                f"{summary.get('label_runs', 0)} label runs", run_line(commit, summary))
    page.add("Summary", html.key_values(summary_fields(summary, skip=("classes",))))
    page.add("Status", status_table(summary.get("status", {}), commit, "videos", "video_uri", (VideoStatus, Status)))
    page.add("Videos", videos_table(commit))
    page.add("Timelines", timelines(commit))
    return page


def predict_page(commit: results.Commit) -> Page:
    summary = read_summary(commit)
    page = Page(f"predict: {summary.get('inputs', 0)} inputs -> {summary.get('rows', 0)} rows",
                run_line(commit, summary))
    page.add("Summary", html.key_values(summary_fields(summary)))
    page.add("Status", status_table(summary.get("status", {}), commit, "predictions", "source_uri"))
    return page


COMMITTED_PAGES = {"preprocess": preprocess_page, "synthesize": synthesize_page,
                   "label-videos": label_videos_page, "predict": predict_page}


def read_summary(commit: results.Commit) -> dict:
    try:
        return commit.summary()
    except FileNotFoundError:  # tables committed outside a job (results.commit_tables) have none
        return {}


def run_line(commit: results.Commit, summary: dict) -> str:
    when = commit.info.get("committed_at", "")
    took = f" in {summary['elapsed_s']} s" if "elapsed_s" in summary else ""
    return f"{commit.output} · run {commit.run} committed {when}{took}"


def summary_fields(summary: dict, skip: tuple[str, ...] = ()) -> dict:
    """The summary's counts and settings: not its status (a table of its own), its file
    URIs (the page shows the files) or lists."""
    return {k: v for k, v in summary.items() if k != "status" and k not in skip and not k.endswith("_uri")
            and not isinstance(v, list)}


def status_table(counts: dict, commit: results.Commit, folder: str, name_column: str,
                 kinds: tuple[type, ...] = (Status,)) -> str:
    """Count, meaning (from the first of `kinds` that has the status) and a few example
    inputs (with their error) per status."""
    if not counts:
        return html.note("no inputs")
    examples = status_examples(commit, folder, name_column)
    rows = [[status, count, describe(status, kinds), html.lines(examples.get(status, []))]
            for status, count in sorted(counts.items(), key=lambda item: -item[1])]
    return html.table(["status", "inputs", "meaning", f"examples (up to {MAX_EXAMPLES})"], rows)


def status_examples(commit: results.Commit, folder: str, name_column: str) -> dict[str, list[str]]:
    """Up to MAX_EXAMPLES `name: error` lines for each status that is not a good one."""
    files = commit.uris(folder)
    if not files:
        return {}
    dataset = results.arrow_dataset(files)
    if not {"status", name_column} <= set(dataset.schema.names):
        return {}
    columns = [name_column, "status", *(["error"] if "error" in dataset.schema.names else [])]
    bad = dataset.to_table(columns=columns, filter=~pc.field("status").isin(sorted(GOOD_STATUSES)))
    examples: dict[str, list[str]] = {}
    for row in bad.to_pylist():
        shown = examples.setdefault(row["status"], [])
        if len(shown) < MAX_EXAMPLES:
            error = row.get("error") or ""
            shown.append(f"{short_name(row[name_column])}: {error}" if error else short_name(row[name_column]))
    return examples


def short_name(uri: str) -> str:
    """The last two parts of a URI: enough to find the input, short enough for a table."""
    parts = (uri or "").rstrip("/").split("/")
    return "/".join(parts[-2:])


def describe(status: str, kinds: tuple[type, ...]) -> str:
    for kind in kinds:
        if status in kind._value2member_map_:
            return kind(status).description
    return ""


def pictures(uris: list[str], alt: str) -> str:
    found = [uri for uri in uris if storage.exists(uri)]
    if not found:
        return html.note("none written")
    return "".join(html.image(storage.read_bytes(uri), alt, posixpath.basename(uri)) for uri in found)


def png_files(folder: str) -> list[str]:
    return sorted(storage.list_files(folder, (".png",))) if storage.exists(folder) else []


def videos_table(commit: results.Commit) -> str:
    files = commit.uris("videos")
    if not files:
        return html.note("no videos/ table")
    columns = ["video_uri", "status", "duration_s", "n_tracks", "dominant", "face_time_s"]
    table = results.arrow_dataset(files).to_table(columns=columns).sort_by("video_uri")
    rows = [[short_name(r["video_uri"]), r["status"], r["duration_s"], r["n_tracks"], r["dominant"],
             r["face_time_s"]] for r in table.slice(0, MAX_VIDEO_ROWS).to_pylist()]
    more = table.num_rows - len(rows)
    return (html.table(["video", "status", "seconds", "tracks", "dominant", "face seconds"], rows, sortable=True)
            + (html.note(f"{more} more videos are not shown (see videos/)") if more > 0 else ""))


def timelines(commit: results.Commit) -> str:
    """One timeline per decoded video, the first MAX_TIMELINES of them: videos with the most
    tracks first (a video without a face has an empty timeline), then by name. Found from
    videos/, not by listing timelines/ (a million objects on S3)."""
    names = timeline_names(commit)
    if not names:
        return html.note("no timelines (no video was decoded)")
    shown = pictures([commit.run_uri("timelines", name) for name in names[:MAX_TIMELINES]], "expression timeline")
    more = len(names) - MAX_TIMELINES
    return shown + (html.note(f"{more} more timelines are not shown (see timelines/ in the run)") if more > 0 else "")


def timeline_names(commit: results.Commit) -> list[str]:
    """The timelines' file names, in the order shown. A timeline is named after its video's
    WebVTT file (stages.video.timeline_uri); by name, so that an output copied elsewhere
    still finds them."""
    files = commit.uris("videos")
    if not files:
        return []
    videos = results.arrow_dataset(files).to_table(columns=["webvtt", "n_tracks"], filter=pc.field("webvtt") != "")
    ranked = sorted((-(v["n_tracks"] or 0), posixpath.basename(v["webvtt"])[:-len(".vtt")] + ".png")
                    for v in videos.to_pylist())
    return [name for _, name in ranked]


# ---------------------------------------------------------------- training, evaluation, sweeps

METRIC_FIELDS = ("model", "clip_length", "split", "n", "accuracy", "macro_f1", "epoch", "best_epoch", "epochs",
                 "train_s", "checkpoint", "data")


def tested_items(metrics: dict) -> str:
    """'N faces', or 'N clips' for a clip model's metrics (its clip_length above 0)."""
    return f"{metrics.get('n', 0)} {'clips' if metrics.get('clip_length') else 'faces'}"


def metrics_page(output: str) -> Page:
    """train (metrics.json with the epochs' history) or evaluate (without)."""
    metrics = json.loads(storage.read_bytes(storage.join(output, "metrics.json")))
    job = "train" if "history" in metrics else "evaluate"
    f1 = metrics.get("macro_f1")
    title = (f"{job} {metrics.get('model', '')}: macro-F1 {'n/a' if f1 is None else f'{f1:.3f}'} on "
             f"{metrics.get('split', '?')} ({tested_items(metrics)})")
    page = Page(title, output)
    page.add("Metrics", html.key_values({k: metrics[k] for k in METRIC_FIELDS if k in metrics}))
    if job == "train":
        page.add("Learning curves", pictures([storage.join(output, "learning_curve.png")], "learning curves"))
    page.add("Confusion matrix", pictures([storage.join(output, "confusion.png")], "confusion matrix"))
    page.add("Per-class recall", per_class_table(metrics))
    return page


def per_class_table(metrics: dict) -> str:
    recall, f1, support = (metrics.get(k, {}) for k in ("per_class_recall", "per_class_f1", "support"))
    rows = [[name, recall.get(name), f1.get(name), support.get(name)] for name in metrics.get("class_names", recall)]
    return html.table(["class", "recall", "F1", f"{metrics.get('split', '')} faces".strip()], rows, sortable=True)


def tune_page(output: str) -> Page:
    trials = pd.read_csv(io.BytesIO(storage.read_bytes(storage.join(output, "results.csv"))))
    page = Page(f"tune: {len(trials)} trials", output)
    page.add("Trials plot", pictures([storage.join(output, "trials.png")], "validation macro-F1 per epoch"))
    rows = [[None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in row]
            for row in trials.itertuples(index=False)]
    page.add("Trials", html.table(list(trials.columns), rows, sortable=True)
             + html.note("click a column's header to sort by it"))
    best = storage.join(output, "best_config.yaml")
    page.add("Best config", html.preformatted(storage.read_bytes(best).decode()) if storage.exists(best)
             else html.note("none written"))
    return page
