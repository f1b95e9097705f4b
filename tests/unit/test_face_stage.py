"""The face stage on a whole batch, without Ray: every input gets its one manifest row,
faces come from a batched detect + landmarks call, bad inputs get their status."""
from __future__ import annotations

import cv2
import numpy as np

from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import FER_PIXELS, input_row
from fer_ray.schema import FACE_ROWS, face_array
from fer_ray.stages.base import rows_batch
from fer_ray.stages.face import FaceStage
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
    for row in rows:
        row["hint_landmarks"] = np.full(136, np.nan, np.float32)
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
