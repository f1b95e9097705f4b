"""FuseSubjectsStage: the faces of whole subjects -> mixed-emotion faces and a manifest row per input.

Applied per subject (Ray Data groupby), so each call sees every face of its subjects; a
batch may still hold several subjects, which are handled one by one. Per face, the first
problem found becomes its manifest status (schema.MixedStatus): no subject, already a
fused face, not a basic expression, unusable landmarks, a face shape unlike its subject's.
The usable faces of each basic expression are picked by the rule (first take, every take,
k at random with a seed), and every ordered pair of two picked expressions is fused
(42 per subject with all seven, one face each).

Output: an Arrow table of schema.MIXED_ROWS, already in the Parquet types: the mixed/
columns plus status/error/n_mixed/skip_reason, and the writer's flags `is_mixed` (a fused
face) and `is_manifest` (an input face's row). Faces travel as bytes with a `face_shape`
column, so subjects of different crop sizes share one block.
"""
from __future__ import annotations

import hashlib
import zlib
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockAccessor

from fer_ray import labels, schema, storage
from fer_ray.config import SynthesizeConfig
from fer_ray.schema import FUSED_LANDMARKER, MixedStatus, face_array
from fer_ray.stages.base import Stage, batch_rows
from fer_ray.vision.fusion import fuse, landmarks_problem

BASIC = set(labels.BASIC7)
# What fusion reads of faces/: everything but the columns a fused face does not inherit.
FACE_COLUMNS = ["sample_id", "dataset", "source_uri", "subject", "split", "label_name", "face_index",
                "face", "face_shape", "landmarks", "det_score", "detector", "landmarker"]


def mixed_sample_id(parent_primary: str, parent_secondary: str, cfg: SynthesizeConfig) -> str:
    """Stable id of a fused face: same parents and method settings -> same id on every run."""
    key = f"mixed|{cfg.method}|{cfg.alpha}|{cfg.feather}|{cfg.seam_position}|{parent_primary}|{parent_secondary}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


class FuseSubjectsStage(Stage):
    num_cpus = 1.0

    def __call__(self, batch: dict) -> pa.Table:
        rows = sorted(batch_rows(batch), key=lambda r: (str(r["subject"]), str(r["source_uri"]),
                                                        int(r.get("face_index", 0))))
        by_subject = defaultdict(list)
        for row in rows:
            by_subject[str(row["subject"])].append(row)
        out = []
        for subject, faces in by_subject.items():
            out += self.no_subject_rows(faces) if not subject else self.subject_rows(faces)
        return schema.table_from_rows(out, schema.MIXED_ROWS)

    def no_subject_rows(self, faces: list[dict]) -> list[dict]:
        return [manifest_row(f, MixedStatus.NO_SUBJECT, "the face has no subject (the layout records none)", "")
                for f in faces]

    def subject_rows(self, faces: list[dict]) -> list[dict]:
        split = Counter(str(f["split"]) for f in faces).most_common(1)[0][0]
        problems = face_problems(faces)
        usable = [f for f in faces if f["sample_id"] not in problems]
        picked = self.pick(usable)
        if len(picked) < 2:
            return self.skipped_subject(faces, problems, picked)
        fused, used, failures = self.fuse_pairs(picked, split)
        out = []
        for face in faces:
            fate = (MixedStatus.USED, "") if used[face["sample_id"]] else (
                MixedStatus.NOT_PICKED, f"pick={self.cfg.pick} left it out")
            status, error = problems.get(face["sample_id"]) or failures.get(face["sample_id"]) or fate
            out.append(manifest_row(face, status, error, "", used[face["sample_id"]]))
        return fused + out

    def skipped_subject(self, faces: list[dict], problems: dict, picked: dict) -> list[dict]:
        found = ", ".join(sorted(picked)) or "none"
        reason = (f"{len(picked)} usable basic expression(s) ({found}); a pair needs two"
                  + (f"; {len(problems)} face(s) unusable" if problems else ""))
        return [manifest_row(f, *problems.get(f["sample_id"], (MixedStatus.LONE_EXPRESSION, reason)), reason)
                for f in faces]

    def pick(self, usable: list[dict]) -> dict[str, list[dict]]:
        """{expression: the faces used for it}, in BASIC7 order; faces come sorted by source."""
        by_expression = defaultdict(list)
        for face in usable:
            by_expression[str(face["label_name"])].append(face)
        picked = {}
        for name in labels.BASIC7:
            takes = by_expression.get(name, [])
            if takes:
                picked[name] = self.pick_takes(takes, name)
        return picked

    def pick_takes(self, takes: list[dict], expression: str) -> list[dict]:
        if self.cfg.pick == "first":
            return takes[:1]
        if self.cfg.pick == "every":
            return takes
        key = zlib.crc32(f"{takes[0]['subject']}|{expression}".encode())
        rng = np.random.default_rng([self.cfg.seed, key])
        chosen = rng.choice(len(takes), size=min(self.cfg.pick_k, len(takes)), replace=False)
        return [takes[i] for i in sorted(chosen)]

    def fuse_pairs(self, picked: dict, split: str) -> tuple[list[dict], Counter, dict]:
        """Fused rows, {sample_id: pairs it is a parent of}, {sample_id: fusion_error}."""
        fused, used, failures = [], Counter(), {}
        pairs = [(a, b) for primary, secondary in labels.MIXED_PAIRS if primary in picked and secondary in picked
                 for a in picked[primary] for b in picked[secondary]]
        for a, b in pairs:
            try:
                fused.append(self.mixed_row(a, b, split))
            except Exception as err:  # noqa: BLE001 - one bad pair must not end the job
                message = f"pair {a['label_name']}+{b['label_name']} with {b['sample_id']}: {type(err).__name__}: {err}"
                failures[a["sample_id"]] = (MixedStatus.FUSION_ERROR, message[:500])
                continue
            used.update([a["sample_id"], b["sample_id"]])
        return fused, used, failures

    def mixed_row(self, a: dict, b: dict, split: str) -> dict:
        cfg = self.cfg
        face_a, face_b = face_array(a["face"], a["face_shape"]), face_array(b["face"], b["face_shape"])
        result = fuse(cfg.method, face_a, face_b, a["landmarks"], b["landmarks"], alpha=cfg.alpha,
                      feather=cfg.feather * face_a.shape[0], seam_position=cfg.seam_position)
        primary, secondary = str(a["label_name"]), str(b["label_name"])
        fused = dict(
            sample_id=mixed_sample_id(a["sample_id"], b["sample_id"], cfg), split=split,
            label_name=f"{primary}+{secondary}", face=result.face.tobytes(),
            face_shape=np.asarray(a["face_shape"], np.int32), landmarks=result.landmarks.reshape(-1),
            det_score=min(a["det_score"], b["det_score"]), detector=str(a["detector"]),
            landmarker=f"{FUSED_LANDMARKER}{cfg.method}", primary=labels.CANONICAL_INDEX[primary],
            secondary=labels.CANONICAL_INDEX[secondary], mixed_label=labels.mixed_index(primary, secondary),
            weights=np.asarray(result.weights, np.float32), method=cfg.method,
            parent_primary=str(a["sample_id"]), parent_secondary=str(b["sample_id"]), is_mixed=True)
        return schema.row(schema.MIXED_ROWS, **{**identity(a), **fused})


class FuseUnitsStage(Stage):
    """Work units (pipelines.fusion_units) -> FuseSubjectsStage's rows for their faces, read
    from the faces/ files directly, with each row's `unit` (the id Ray's row checkpoint
    records, so a resumed run skips the units already written)."""
    num_cpus = 1.0

    def __init__(self, cfg: SynthesizeConfig):
        super().__init__(cfg)
        self.fuse = FuseSubjectsStage(cfg)

    def __call__(self, batch: dict) -> pa.Table:
        tables = []
        for unit, files, rows, pixels in zip(batch["unit"], batch["files"], batch["rows"], batch["pixels"]):
            faces = BlockAccessor.for_block(self.read_faces(files, rows, bool(pixels))).to_batch_format("numpy")
            fused = self.fuse(faces)
            tables.append(fused.append_column("unit", pa.array([str(unit)] * fused.num_rows, pa.string())))
        return pa.concat_tables(tables)

    def read_faces(self, files, rows, pixels: bool) -> pa.Table:
        """The unit's face rows; without pixels (an empty `face`) for faces that are only reported."""
        columns = FACE_COLUMNS if pixels else [c for c in FACE_COLUMNS if c != "face"]
        parts = [read_rows(str(uri), np.asarray(at, np.int64), columns, self.cfg.retry)
                 for uri, at in zip(files, rows)]
        table = pa.concat_tables(parts, promote_options="default")  # faces/ files of older runs may differ
        if not pixels:
            table = table.append_column("face", pa.array([b""] * table.num_rows, pa.binary()))
        return table


def read_rows(uri: str, rows: np.ndarray, columns: list[str], retry) -> pa.Table:
    fs, path = storage.resolve(uri)
    table = storage.retrying(f"read {uri}", lambda: pq.read_table(path, filesystem=fs, columns=columns), retry)
    return table.take(pa.array(rows))


def face_problems(faces: list[dict]) -> dict[str, tuple[str, str]]:
    """{sample_id: (status, error)} for the faces that cannot be fused."""
    problems = {}
    for face in faces:
        problem = single_face_problem(face)
        if problem:
            problems[face["sample_id"]] = problem
    shapes = Counter(shape_of(f) for f in faces if f["sample_id"] not in problems)
    if shapes:
        common = shapes.most_common(1)[0][0]
        for face in faces:
            if face["sample_id"] not in problems and shape_of(face) != common:
                problems[face["sample_id"]] = (
                    MixedStatus.SIZE_MISMATCH,
                    f"face is {_shape_text(shape_of(face))}, most faces of subject {face['subject']} "
                    f"are {_shape_text(common)}")
    return problems


def single_face_problem(face: dict) -> tuple[str, str] | None:
    if str(face["landmarker"]).startswith(FUSED_LANDMARKER):
        return (MixedStatus.ALREADY_MIXED,
                f"face is already fused ({face['landmarker']}); mixing it again would mix 4 expressions")
    if str(face["label_name"]) not in BASIC:
        return (MixedStatus.NOT_BASIC,
                f"label {face['label_name'] or 'unknown'!r} is not one of {', '.join(labels.BASIC7)}")
    shape = shape_of(face)
    if len(face["face"]) != int(np.prod(shape)):
        return (MixedStatus.SIZE_MISMATCH,
                f"{len(face['face'])} face bytes, face_shape {_shape_text(shape)} needs {int(np.prod(shape))}")
    landmarks = face["landmarks"]
    problem = landmarks_problem(None if landmarks is None else np.asarray(landmarks, np.float64), shape)
    return (MixedStatus.BAD_LANDMARKS, problem) if problem else None


def shape_of(face: dict) -> tuple[int, ...]:
    return tuple(int(v) for v in face["face_shape"])


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def identity(face: dict) -> dict:
    """The input face's identity columns: fused rows start from their primary parent's.
    Fused and manifest rows share one block, so both carry every column (schema.MIXED_ROWS)."""
    return {name: str(face.get(name, "")) for name in ("sample_id", "dataset", "source_uri", "subject",
                                                       "split", "label_name")}


def manifest_row(face: dict, status: str, error: str, skip_reason: str, n_mixed: int = 0) -> dict:
    """An input face's manifest row."""
    return schema.row(schema.MIXED_ROWS, **identity(face), status=status, error=error, n_mixed=n_mixed,
                      skip_reason=skip_reason, is_manifest=True)
