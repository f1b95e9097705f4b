"""What a finished job prints for the person who ran it: the CLI's commands and the demo
share these, so each summary is worded in one place."""
from __future__ import annotations

import json

from fer_ray import storage
from fer_ray.progress import status_text
from fer_ray.reports import PAGE_FILE
from fer_ray.reports.pages import tested_items


def run_line(summary: dict) -> str:
    """Which run the output now holds, and what this invocation did."""
    skipped = summary.get("units_skipped", 0)
    return (f"  run {summary.get('run', '?')}: {summary.get('run_state', '?')}"
            + (f", {skipped} inputs committed earlier were skipped" if skipped else ""))


def print_summary(summary: dict) -> None:
    if "clips_uri" in summary:
        print_clips_summary(summary)
        return
    status = status_text(summary.get("status", {}))
    print(f"\n{summary['layout']}: {summary.get('inputs', 0)} inputs -> {summary.get('faces', 0)} faces "
          f"in {summary['elapsed_s']} s ({summary['images_per_s']} images/s)")
    print(run_line(summary))
    if summary.get("videos_carried"):
        print(f"  {summary['videos_carried']} videos unchanged since the committed run were carried over, "
              f"not labelled again")
    print(f"  status: {status}")
    print(f"  faces by label: {json.dumps(summary.get('faces_by_label', {}))}")
    print(f"  faces by split: {json.dumps(summary.get('faces_by_split', {}))}")
    print(f"  faces: {summary['faces_uri']}\n  manifest: {summary['manifest_uri']}\n"
          f"  contact sheet: {summary['contact_sheet_uri']}")
    print_page(summary.get("output"))


def print_clips_summary(summary: dict) -> None:
    """A video layout's preprocess: clips instead of faces."""
    status = status_text(summary.get("status", {}))
    print(f"\n{summary['layout']}: {summary.get('inputs', 0)} inputs -> {summary.get('clips', 0)} clips of "
          f"{summary['clip_length']} frames in {summary['elapsed_s']} s ({summary['clips_per_s']} clips/s)")
    print(run_line(summary))
    print(f"  status: {status}")
    print(f"  clips by label: {json.dumps(summary.get('clips_by_label', {}))}")
    print(f"  clips by split: {json.dumps(summary.get('clips_by_split', {}))}; {summary.get('valid_frames', 0)} "
          f"valid frames; {summary.get('repeated', 0)} clips with repeated frames")
    print(f"  clips: {summary['clips_uri']}\n  manifest: {summary['manifest_uri']}\n"
          f"  contact sheet: {summary['contact_sheet_uri']}")
    print_page(summary.get("output"))


def print_synthesis(summary: dict, max_listed: int = 10) -> None:
    status = status_text(summary["status"])
    print(f"\n{summary['method']}: {summary['inputs']} faces of {summary['subjects_used']} subjects -> "
          f"{summary['mixed']} mixed faces in {summary['elapsed_s']} s ({summary['mixed_per_s']} faces/s)")
    print(run_line(summary))
    print(f"  input faces: {status}")
    print(f"  mixed by split: {json.dumps(summary['mixed_by_split'])}; "
          f"{len(summary['mixed_by_pair'])} of 42 pairs present")
    skipped = list(summary["subjects_skipped"].items())
    for subject, reason in skipped[:max_listed]:
        print(f"  skipped subject {subject}: {reason}")
    if len(skipped) > max_listed:
        print(f"  ... and {len(skipped) - max_listed} more skipped subjects (see _summary.json)")
    print(f"  mixed: {summary['mixed_uri']}\n  manifest: {summary['manifest_uri']}")
    for uri in summary["contact_sheets"]:
        print(f"  contact sheet: {uri}")
    print_page(summary.get("output"))


def print_sweep(summary: dict) -> None:
    best = summary["best"]
    print(f"\n{summary['trials']} trials; best {best['trial']}: {best['model']} "
          f"val_macro_f1={best['best_val_macro_f1']:.3f} (lr={best['lr']:.2e}, batch={best['batch_size']})")
    print(f"  results: {summary['results_csv']}\n  best config: {summary['best_config']}\n"
          f"  trials plot: {summary['plot']}")
    print_page(summary.get("output"))


def print_report(report: dict, max_classes: int = 10) -> None:
    recall = report["per_class_recall"]
    recalls = ", ".join(f"{k}={v:.2f}" if v is not None else f"{k}=n/a" for k, v in recall.items()) if (
        len(recall) <= max_classes) else f"{len(recall)} classes, see metrics.json and confusion.png"
    print(f"\n{report['model']} on {report['split']} ({tested_items(report)}): accuracy={report['accuracy']:.3f} "
          f"macro_f1={report['macro_f1']:.3f}\n  recall: {recalls}\n  checkpoint: {report['checkpoint']}")
    if "output" in report:
        for name in ("metrics.json", "confusion.png", "learning_curve.png"):
            print(f"  {name}: {report['output'].rstrip('/')}/{name}")
        print_page(report["output"])


def print_predictions(summary: dict) -> None:
    """predict: into a run folder (run line, predictions/ and the results page) or one file."""
    print(f"\npredict: {summary.get('inputs', 0)} inputs -> {summary.get('rows', 0)} rows "
          f"in {summary['elapsed_s']} s")
    if "run" in summary:
        print(run_line(summary))
    print(f"  status: {status_text(summary.get('status', {}))}")
    print(f"  predictions: {summary.get('predictions_uri', summary['output'])}")
    print_page(summary.get("output"))


def print_labelling(summary: dict) -> None:
    status = status_text(summary.get("status", {}))
    print(f"\nlabel-videos: {summary.get('inputs', 0)} inputs -> {summary.get('frames_sampled', 0)} frames sampled, "
          f"{summary.get('frames', 0)} faces in {summary.get('tracks', 0)} tracks, "
          f"{summary.get('label_runs', 0)} label runs in {summary['elapsed_s']} s")
    print(run_line(summary))
    if summary.get("videos_carried"):
        print(f"  {summary['videos_carried']} videos unchanged since the committed run were carried over, "
              f"not labelled again")
    print(f"  status: {status}")
    print(f"  dominant expression per video: {json.dumps(summary.get('dominant', {}))}")
    for folder in ("videos", "frames", "tracks", "segments", "webvtt", "timelines"):
        print(f"  {folder}: {summary[f'{folder}_uri']}")
    print_page(summary.get("output"))


def results_page(output: str | None) -> str:
    """The output's results page, '' when it has none (it failed to be written, say)."""
    if not output:
        return ""
    uri = storage.join(output, PAGE_FILE)
    return uri if storage.exists(uri) else ""


def print_page(output: str | None) -> None:
    page = results_page(output)
    if page:
        print(f"  results page: {page}")
