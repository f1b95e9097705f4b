"""Face options end to end: several faces per image, largest only, colour output at 96 px."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer_ray import schema
from fer_ray.vision.synthetic_face import draw_face, identity_for
from tests.integration.helpers import read_output, run_preprocess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_face_folder(tmp_path_factory, ray_cluster):
    """One photo with two people (a big face and a smaller one) and one with a single face."""
    root = tmp_path_factory.mktemp("two_faces")
    big, _ = draw_face("happy", identity_for("A"), size=256, color=True)
    small, _ = draw_face("sad", identity_for("B"), size=180, color=True)
    canvas = np.full((300, 520, 3), 90, np.uint8)
    canvas[20:276, 10:266], canvas[60:240, 320:500] = big, small
    (root / "happy").mkdir()
    Image.fromarray(canvas).save(root / "happy" / "pair.png")
    Image.fromarray(big).save(root / "happy" / "single.png")
    return root


@pytest.fixture(scope="module")
def all_faces(two_face_folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("all"))
    run_preprocess("folder", str(two_face_folder), out, size=96, color="rgb")
    return out


def pair_rows(rows: list[dict]) -> list[dict]:
    return sorted((r for r in rows if r["source_uri"].endswith("pair.png")), key=lambda r: r["face_index"])


def test_every_face_gets_a_row_largest_first(all_faces):
    faces = read_output(all_faces, "faces").to_pylist()
    manifest = {r["source_uri"].rsplit("/", 1)[1]: r for r in read_output(all_faces, "manifest").to_pylist()}
    assert (manifest["pair.png"]["n_faces"], manifest["single.png"]["n_faces"]) == (2, 1)
    pair = pair_rows(faces)
    assert [r["face_index"] for r in pair] == [0, 1]
    widths = [r["bbox"][2] - r["bbox"][0] for r in pair]
    assert widths[0] > widths[1]  # face 0 is the larger person, on the left
    assert pair[0]["bbox"][0] < 266 <= pair[1]["bbox"][0]
    assert len({r["sample_id"] for r in faces}) == len(faces)
    for row in faces:
        assert tuple(row["face_shape"]) == (96, 96, 3)
        assert schema.face_array(row["face"], row["face_shape"]).shape == (96, 96, 3)


def test_largest_only(two_face_folder, tmp_path):
    run_preprocess("folder", str(two_face_folder), str(tmp_path), largest_only=True)
    faces = read_output(str(tmp_path), "faces").to_pylist()
    assert sorted(r["source_uri"].rsplit("/", 1)[1] for r in faces) == ["pair.png", "single.png"]


def test_min_face_size_drops_the_smaller_face(two_face_folder, all_faces, tmp_path):
    big, small = (r["bbox"][2] - r["bbox"][0] for r in pair_rows(read_output(all_faces, "faces").to_pylist()))
    threshold = int((big + small) / 2)
    run_preprocess("folder", str(two_face_folder), str(tmp_path), min_face_size=threshold)
    pair = pair_rows(read_output(str(tmp_path), "faces").to_pylist())
    assert len(pair) == 1
    assert pair[0]["bbox"][2] - pair[0]["bbox"][0] >= threshold and pair[0]["bbox"][0] < 266  # the big face
