"""The face stage on a whole batch, without Ray: every input gets its one manifest row,
faces come from a batched detect + landmarks call, bad inputs get their status."""
from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pytest

from fer_ray.config import ConfigError, PreprocessConfig
from fer_ray.datasets.common import input_row
from fer_ray.schema import FACE_ROWS, FER_PIXELS, face_array
from fer_ray.stages.base import rows_batch
from fer_ray.stages.face import FaceStage, plan_chunks
from fer_ray.vision.synthetic_face import draw_face, identity_for


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_a_mixed_batch_accounts_for_every_input():
    stage = FaceStage(PreprocessConfig(layout="folder", input="-", output="-"))  # haar + dlib
    happy, _ = draw_face("happy", identity_for("A"), size=256)
    sad, _ = draw_face("sad", identity_for("B"), size=256)
    rows = [input_row("a.png", "folder", data=png(happy)), input_row("broken.png", "folder", data=b"\x89PNG junk"),
            input_row("blank.png", "folder", data=png(np.full((200, 200), 128, np.uint8))),
            input_row("short", "fer2013", encoding=FER_PIXELS, data=b" ".join([b"7"] * 2000)),
            input_row("b.png", "folder", data=png(sad)),
            input_row("skipped", "folder", status="bad_label", error="label 9 is not in the mapping")]
    table = stage(rows_batch(rows))
    assert table.schema == FACE_ROWS  # already the Parquet types: the writer passes the columns through
    out = table.to_pylist()
    manifest = {r["source_uri"]: r for r in out if r["is_manifest"]}
    assert list(manifest) == [r["source_uri"] for r in rows]  # one each, input order
    assert {uri: r["status"] for uri, r in manifest.items()} == {
        "a.png": "ok", "broken.png": "decode_error", "blank.png": "no_face", "short": "bad_pixels",
        "b.png": "ok", "skipped": "bad_label"}
    assert "2000" in manifest["short"]["error"]
    faces = [r for r in out if r["is_face"]]
    assert sorted(r["source_uri"] for r in faces) == ["a.png", "b.png"]
    assert all(r["landmarker"] == "dlib" and face_array(r["face"], r["face_shape"]).shape == (48, 48) for r in faces)


# ------------------------------------------------------------ decoded pixels per chunk


def test_plan_chunks_keeps_order_and_each_chunk_within_the_budget():
    assert plan_chunks([], 10) == []
    assert plan_chunks([4, 4, 4, 4], 100) == [range(0, 4)]
    assert plan_chunks([4, 4, 4, 4], 8) == [range(0, 2), range(2, 4)]
    assert plan_chunks([6, 0, 5, 5, 0, 0, 9, 1], 10) == [range(0, 2), range(2, 6), range(6, 8)]
    assert plan_chunks([3, 12, 3], 10) == [range(0, 1), range(1, 2), range(2, 3)]  # over the budget: alone
    sizes = [7, 2, 9, 1, 1, 8, 3, 3, 3, 10]
    chunks = plan_chunks(sizes, 10)
    assert [i for chunk in chunks for i in chunk] == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in chunk) <= 10 for chunk in chunks)


class RecordingFaceStage(FaceStage):
    """A face stage that records the decoded pixels of each chunk of images it decodes."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.decoded = []

    def decode_rows(self, rows):
        images = super().decode_rows(rows)
        self.decoded.append(sum(image.shape[0] * image.shape[1] for image in images.values()))
        return images


def mixed_sizes_batch() -> dict:
    """Faces drawn at 240-480 px, and inputs that are decoded in no chunk (broken, refused as
    too large, already failed) or tiny (a FER2013 row), in one batch."""
    rows = []
    for i, (expression, side) in enumerate([("happy", 240), ("sad", 480), ("surprise", 320), ("anger", 400),
                                            ("fear", 480), ("happy", 260), ("disgust", 360)]):
        image, _ = draw_face(expression, identity_for(f"S{i}"), size=side)
        rows.append(input_row(f"{i}.png", "folder", data=png(image)))
    rows.insert(2, input_row("broken.png", "folder", data=b"\x89PNG junk"))
    rows.insert(4, input_row("huge.png", "folder", data=png(np.zeros((600, 700), np.uint8))))
    rows.insert(5, input_row("row", "fer2013", encoding=FER_PIXELS, data=b" ".join([b"90"] * 2304)))
    rows.append(input_row("skipped", "folder", status="bad_label", error="label 9 is not in the mapping"))
    return rows_batch(rows)


def same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and cells, NaN equal to NaN (Arrow's equals counts NaN != NaN)."""
    return a.schema == b.schema and all(
        np.array_equal(x.to_numpy(), y.to_numpy(), equal_nan=True) if pa.types.is_floating(x.type) else x.equals(y)
        for x, y in zip(a.columns, b.columns))


def test_a_batch_in_chunks_within_the_pixel_budget_gives_the_same_rows():
    batch, budget = mixed_sizes_batch(), 400_000
    stages = {}
    for name, max_batch_pixels in (("chunked", budget), ("whole", 10**9)):
        cfg = PreprocessConfig(layout="folder", input="-", output="-")
        cfg.face.max_pixels, cfg.face.max_batch_pixels = 300_000, max_batch_pixels
        cfg.validate()
        stages[name] = RecordingFaceStage(cfg)
    chunked, whole = (stages[name](batch) for name in ("chunked", "whole"))
    assert same_table(chunked, whole)  # same rows, order, statuses, crops and landmarks
    manifest = {r["source_uri"]: r["status"] for r in whole.to_pylist() if r["is_manifest"]}
    assert (manifest["broken.png"], manifest["huge.png"], manifest["skipped"]) == ("decode_error", "too_large",
                                                                                    "bad_label")
    assert sum(status == "ok" for status in manifest.values()) >= 5
    assert len(stages["whole"].decoded) == 1
    assert len(stages["chunked"].decoded) > 2 and max(stages["chunked"].decoded) <= budget
    assert sum(stages["chunked"].decoded) == sum(stages["whole"].decoded)  # every image decoded once


def test_max_batch_pixels_below_max_pixels_is_refused():
    cfg = PreprocessConfig(layout="folder", input="in", output="out")
    cfg.face.max_batch_pixels = cfg.face.max_pixels - 1
    with pytest.raises(ConfigError, match="^face.max_batch_pixels: .* must be >= face.max_pixels"):
        cfg.validate()


def test_annotated_crops_are_aligned_without_loading_the_landmark_model():
    """AffectNet's crops carry their landmarks: an actor that only sees those never loads the
    landmarker (0.47 s of CPU and 70 MiB per actor measured); a crop whose annotation is unusable
    still gets predicted landmarks, the model loaded then."""
    stage = FaceStage(PreprocessConfig(layout="affectnet", input="-", output="-"))
    face, points = draw_face("happy", identity_for("A"), size=256)
    annotated = input_row("a.png", "affectnet", data=png(face), hint_landmarks=points.astype(np.float32).ravel())
    first = stage(rows_batch([annotated])).to_pylist()
    assert [(r["status"], r["landmarker"]) for r in first] == [("ok", "annotation")]
    assert "landmarker" not in vars(stage.extractor)  # never built

    unusable = input_row("b.png", "affectnet", data=png(face),
                         hint_landmarks=np.full(points.size, np.nan, np.float32))
    second = stage(rows_batch([annotated, unusable])).to_pylist()
    assert {r["source_uri"]: (r["status"], r["landmarker"]) for r in second} == {
        "a.png": ("ok", "annotation"), "b.png": ("ok", "dlib")}
    assert "landmarker" in vars(stage.extractor)


def test_the_stage_reads_inputs_on_a_file_system_itself_and_leaves_object_storage_to_the_fetch(tmp_path):
    from fer_ray import datasets
    from fer_ray.sample_data import write_sample_data
    from fer_ray.stages.fetch import fetched_by_face_stage

    raw = write_sample_data(str(tmp_path), layouts=("affectnet",))["affectnet"]["uri"]
    cfg = PreprocessConfig(layout="affectnet", input=raw, output=str(tmp_path / "out"))
    listed = datasets.list_inputs(cfg).rows.slice(0, 3)
    batch = {name: column.to_numpy(zero_copy_only=False) for name, column in zip(listed.column_names, listed.columns)}
    assert not any(batch["data"])  # the listing reads nothing
    rows = FaceStage(cfg)(batch).to_pylist()
    assert [(r["status"], r["landmarker"]) for r in rows] == [("ok", "annotation")] * 3  # image and .npy files read
    assert fetched_by_face_stage(cfg)
    assert not fetched_by_face_stage(PreprocessConfig(layout="affectnet", input="s3://raw/affectnet", output="-"))
    assert not fetched_by_face_stage(PreprocessConfig(layout="fer2013", input=raw, output="-"))  # its CSV streams
