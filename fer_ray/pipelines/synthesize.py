"""Synthesize: a preprocess output's faces/ -> mixed-emotion faces in mixed/, a manifest,
a summary and a 7x7 contact sheet per sampled subject.

No pixels travel through a shuffle: a planning task cuts the subjects into work units from
the `subject` column alone, and each fusing task reads its unit's faces straight from the
faces/ files (pipelines.fusion_units).
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import ray
import ray.data

from fer_ray import config, labels, results, schema, storage
from fer_ray.config import ConfigError, SynthesizeConfig
from fer_ray.pipelines import fusion_units, runs
from fer_ray.pipelines.writer import Folder, ShardSink
from fer_ray.runtime import LIGHT_CPUS, SYSTEM_FAILURE_RETRIES, available_cpus, start_ray
from fer_ray.stages.base import apply_stage
from fer_ray.stages.fusion import FACE_COLUMNS, FuseUnitsStage
from fer_ray.vision.draw import contact_sheet, encode_png

OUTPUT_FOLDERS = {"mixed": Folder("is_mixed", schema.MIXED), "manifest": Folder("is_manifest", schema.MIXED_MANIFEST)}


@dataclass
class SynthesisInput:
    """The committed faces a synthesis run reads, and the bytes of one face (it sizes the
    output files)."""
    commit: results.Commit
    files: list[str]
    rows: int
    face_bytes: int


def check(cfg: SynthesizeConfig) -> SynthesisInput:
    """Everything that can be known wrong before any Ray work."""
    cfg.validate()
    runs.absolute_paths(cfg)
    runs.check_input_output(cfg.input, cfg.output, cfg.retry)
    commit = results.read_commit(cfg.input)
    if commit is not None and "mixed" in commit.files:
        raise ConfigError(f"input: {cfg.input} holds mixed/ shards (a synthesis output); synthesis reads the "
                          f"faces/ shards that `fer-ray preprocess --output` writes")
    commit = results.committed(cfg.input, "input", folder="faces")
    files = commit.uris("faces")
    dataset = results.arrow_dataset(files)
    missing = sorted(set(FACE_COLUMNS) - set(dataset.schema.names))
    if missing:
        raise ConfigError(f"input: the faces/ files of {cfg.input} lack the columns {', '.join(missing)}")
    head = dataset.head(1, columns=["face_shape"]).to_pylist()
    face_bytes = int(np.prod(head[0]["face_shape"])) if head else 0
    return SynthesisInput(commit, files, dataset.count_rows(), face_bytes)


def run(cfg: SynthesizeConfig) -> dict:
    """Run the whole job; returns the summary (also written to the run's `_summary.json`)."""
    faces = check(cfg)
    with runs.holding("synthesize", cfg, faces.commit.run) as staged:
        if staged.up_to_date:
            return runs.committed_summary(staged)
        start_ray()
        runs.begin(staged, config.to_yaml(cfg))
        sink = ShardSink(staged.uri(), face_bytes=faces.face_bytes, folders=OUTPUT_FOLDERS, count=synthesis_counts,
                         rows_per_file=cfg.rows_per_file, retry=cfg.retry)
        units = planned_units(faces, staged, cfg)
        sink.write_dataset(runs.checkpointed(staged, fused_rows(units, cfg), "unit"), "synthesize", faces.rows, "faces")
        totals = runs.finish_counts(staged, faces.rows)
        summary = make_summary(cfg, staged, totals, sink.totals)
        summary["contact_sheets"] = write_contact_sheets(cfg, staged, faces.files, summary["mixed_by_subject"])
        storage.write_bytes(staged.uri("_summary.json"), json.dumps(summary, indent=2).encode(), cfg.retry)
        runs.publish(staged, tuple(OUTPUT_FOLDERS))
        return summary


def planned_units(faces: SynthesisInput, staged: runs.StagedRun, cfg: SynthesizeConfig) -> list[str]:
    """The run's unit files, planned by a task (the driver holds nothing per face)."""
    plan = ray.remote(num_cpus=LIGHT_CPUS, max_retries=SYSTEM_FAILURE_RETRIES)(fusion_units.write_plan)
    return ray.get(plan.remote(faces.files, faces.face_bytes, available_cpus(),
                               fusion_units.plan_uri(cfg.output, staged.id), cfg.retry))


def fused_rows(units: list[str], cfg: SynthesizeConfig) -> ray.data.Dataset:
    """One task per unit reads its plan and fuses its faces (the read and the map ask for the
    same CPUs, so Ray fuses them: no task of its own, and its worker, for a one-row read)."""
    task = {"num_cpus": FuseUnitsStage.num_cpus, "max_retries": SYSTEM_FAILURE_RETRIES}
    ds = apply_stage(results.read_dataset(units, task_args=task), FuseUnitsStage, cfg, whole_blocks=True)
    # Ray Data's per-operator reservations give the fusing tasks, next to the writer, a budget
    # of about one and a quarter CPUs on a 2-CPU node: one unit at a time. Without them the
    # tasks take every free CPU (the sample at scale 20: 14 s instead of 24 s).
    ds.context.op_resource_reservation_enabled = False
    return ds


def synthesis_counts(rows: dict, keep: dict[str, np.ndarray]) -> dict:
    mixed, manifest = keep["mixed"], keep["manifest"]
    skipped = {str(s): str(r) for s, r in zip(rows["subject"][manifest], rows["skip_reason"][manifest]) if r}
    return {
        "inputs": int(manifest.sum()),
        "mixed": int(mixed.sum()),
        "status": Counter(rows["status"][manifest].tolist()),
        "mixed_by_pair": Counter(rows["label_name"][mixed].tolist()),
        "mixed_by_split": Counter(rows["split"][mixed].tolist()),
        "mixed_by_subject": Counter(rows["subject"][mixed].tolist()),
        "subjects_skipped": skipped,
    }


def make_summary(cfg: SynthesizeConfig, staged: runs.StagedRun, totals: dict, attempt: dict) -> dict:
    summary = {"input": cfg.input, "output": cfg.output, "method": cfg.method, "pick": cfg.pick,
               "inputs": 0, "mixed": 0, "status": {}, "mixed_by_pair": {}, "mixed_by_split": {},
               "mixed_by_subject": {}, "subjects_skipped": {}, **totals, **staged.report(),
               "units_run": attempt.get("inputs", 0)}
    elapsed = time.time() - staged.started
    summary["subjects_used"] = len(summary["mixed_by_subject"])
    summary["elapsed_s"] = round(elapsed, 2)
    summary["mixed_per_s"] = round(attempt.get("mixed", 0) / elapsed, 2) if elapsed else 0.0
    summary["mixed_uri"] = staged.uri("mixed")
    summary["manifest_uri"] = staged.uri("manifest")
    return summary


# ---------------------------------------------------------------- contact sheets

def sampled_subjects(subjects, count: int) -> list[str]:
    """`count` subjects spread evenly over the sorted list (first and last included)."""
    ordered = sorted(subjects)
    if count <= 0 or not ordered:
        return []
    if count >= len(ordered):
        return ordered
    return [ordered[i] for i in np.linspace(0, len(ordered) - 1, count).round().astype(int)]


def write_contact_sheets(cfg: SynthesizeConfig, staged: runs.StagedRun, faces: list[str],
                         mixed_by_subject: dict) -> list[str]:
    """One 7x7 PNG per sampled subject (rows primary, columns secondary, diagonal the
    originals), read back from the written mixed/ shards; returns their URIs."""
    chosen = sampled_subjects(mixed_by_subject, cfg.contact_sheets)
    if not chosen:
        return []
    columns = ["sample_id", "subject", "face", "face_shape", "primary", "secondary",
               "parent_primary", "parent_secondary"]
    mixed = results.arrow_dataset(runs.run_files(staged, "mixed", absolute=True)).to_table(
        columns=columns, filter=pc.field("subject").isin(chosen)).sort_by("sample_id").to_pylist()
    parents = {r["parent_primary"] for r in mixed} | {r["parent_secondary"] for r in mixed}
    originals = {r["sample_id"]: r for r in results.arrow_dataset(faces).to_table(
        columns=["sample_id", "face", "face_shape"], filter=pc.field("sample_id").isin(sorted(parents))).to_pylist()}
    uris = []
    for subject in chosen:
        rows = [r for r in mixed if r["subject"] == subject]
        uri = staged.uri("contact_sheets", re.sub(r"[^A-Za-z0-9_.-]", "_", subject) + ".png")
        storage.write_bytes(uri, encode_png(subject_sheet(rows, originals)), cfg.retry)
        uris.append(uri)
    return uris


def subject_sheet(rows: list[dict], originals: dict) -> np.ndarray:
    """7x7 grid over labels.BASIC7: cell (p, s) the first fused face of that pair, the
    diagonal the original face used for the expression, blank where there is none."""
    cells, parent_of = {}, {}
    for row in rows:
        p, s = labels.CANONICAL[row["primary"]], labels.CANONICAL[row["secondary"]]
        cells.setdefault((p, s), row)
        parent_of.setdefault(p, row["parent_primary"])
        parent_of.setdefault(s, row["parent_secondary"])
    for name, parent in parent_of.items():
        if parent in originals:
            cells[(name, name)] = originals[parent]
    blank = np.zeros_like(schema.face_array(rows[0]["face"], rows[0]["face_shape"]))
    faces, captions = [], []
    for p in labels.BASIC7:
        for s in labels.BASIC7:
            cell = cells.get((p, s))
            faces.append(schema.face_array(cell["face"], cell["face_shape"]) if cell else blank)
            captions.append(("" if not cell else p if p == s else f"{p[:3]}+{s[:3]}"))
    scale = max(1, 144 // blank.shape[0])
    return contact_sheet(faces, [None] * len(faces), captions, cols=len(labels.BASIC7), scale=scale)
