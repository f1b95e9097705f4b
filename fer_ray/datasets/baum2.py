"""BAUM-2: `<root>/S001 ... S286/avi/<clip>.avi`, the label in `<root>/Sxxx/emotion/<clip>.txt`.

The label file holds one number in CK+ coding (labels.parse_ckplus_code), read inside the
clip stage (`annotate`), never on the driver. Every listed name is accounted for: a clip is
an input; its label file is read as its label; a label file without its clip is `skipped`;
a subject folder without `avi/` is one input of status `no_videos` named by the folder; any
other file is `unsupported_format`. The subject is the S### folder; splits are by subject.
"""
from __future__ import annotations

import posixpath

from fer_ray import labels, storage
from fer_ray.config import VIDEO_EXTENSIONS, PreprocessConfig
from fer_ray.datasets.common import Lister, input_row, unusable_row, with_splits
from fer_ray.schema import Status

DATASET = "baum2"
CLIPS_FOLDER, LABELS_FOLDER, LABEL_SUFFIX = "avi", "emotion", ".txt"


def parts_of(uri: str, root: str) -> list[str]:
    """The path of a listed name below the root, as its parts."""
    return storage.relative(uri, root).split("/")


def is_clip(parts: list[str]) -> bool:
    return len(parts) == 3 and parts[1] == CLIPS_FOLDER and parts[2].lower().endswith(VIDEO_EXTENSIONS)


def is_label_file(parts: list[str]) -> bool:
    return len(parts) == 3 and parts[1] == LABELS_FOLDER and parts[2].endswith(LABEL_SUFFIX)


def label_key(subject: str, clip_name: str) -> tuple[str, str]:
    return subject, posixpath.splitext(clip_name)[0]


def list_inputs(cfg: PreprocessConfig, lister: Lister) -> list[dict]:
    entries = lister(cfg.input)
    paths = {entry.uri: parts_of(entry.uri, cfg.input) for entry in entries}
    label_files = {label_key(p[0], p[2]): uri for uri, p in paths.items() if is_label_file(p)}
    clip_keys = {label_key(p[0], p[2]) for p in paths.values() if is_clip(p)}
    clips, others = [], []  # only clips take part in the split: a stray file is nobody's
    for entry in entries:
        parts = paths[entry.uri]
        if entry.problem:
            others.append(unusable_row(entry, DATASET))
        elif is_clip(parts):
            clips.append(clip_row(entry.uri, parts[0], label_files.get(label_key(parts[0], parts[2]))))
        elif not (is_label_file(parts) and label_key(parts[0], parts[2]) in clip_keys):  # else read as a label
            others.append(other_row(entry.uri, parts))
    return with_splits(clips, cfg.split, cfg.input) + others + no_videos_rows(cfg.input, paths.values())


def clip_row(uri: str, subject: str, label_uri: str | None) -> dict:
    if label_uri is None:
        return input_row(uri, DATASET, subject=subject, status=Status.MISSING_ANNOTATION,
                         error=f"no label file {subject}/{LABELS_FOLDER}/{label_key(subject, basename(uri))[1]}"
                               f"{LABEL_SUFFIX} for this clip")
    return input_row(uri, DATASET, subject=subject, sidecar=label_uri)


def other_row(uri: str, parts: list[str]) -> dict:
    """A listed file that is neither a clip nor a clip's label file."""
    if is_label_file(parts):
        return input_row(uri, DATASET, status=Status.SKIPPED,
                         error=f"label file without its clip {parts[0]}/{CLIPS_FOLDER}/"
                               f"{posixpath.splitext(parts[2])[0]}.avi")
    return input_row(uri, DATASET, status=Status.UNSUPPORTED_FORMAT,
                     error=f"not a BAUM-2 clip: clips are <subject>/{CLIPS_FOLDER}/<clip> with a video extension "
                           f"({', '.join(VIDEO_EXTENSIONS)}), labels <subject>/{LABELS_FOLDER}/<clip>{LABEL_SUFFIX}")


def no_videos_rows(root: str, all_parts) -> list[dict]:
    """One row per subject folder with files but no avi/ folder, named by the folder."""
    found: dict[str, set[str]] = {}
    for parts in all_parts:
        if len(parts) > 1:
            found.setdefault(parts[0], set()).add(parts[1])
    return [input_row(storage.join(root, subject) + "/", DATASET, subject=subject, status=Status.NO_VIDEOS,
                      error=f"subject folder {subject} has no {CLIPS_FOLDER}/ folder (it holds: "
                            f"{', '.join(sorted(children))})")
            for subject, children in sorted(found.items()) if CLIPS_FOLDER not in children]


def basename(uri: str) -> str:
    return posixpath.basename(uri)


def annotate(row: dict, read) -> None:
    """Label a clip from its emotion file (one number, CK+ coding)."""
    if not row["sidecar"]:
        return
    try:
        data = read(row["sidecar"])
    except FileNotFoundError:  # removed since the listing
        row["status"], row["error"] = Status.MISSING_ANNOTATION, f"label file {row['sidecar']} is gone"
        return
    label, error = labels.parse_ckplus_code(data)
    if error:
        row["status"], row["error"] = Status.BAD_LABEL, error
    row["label"] = label
