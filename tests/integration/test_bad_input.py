"""Bad input never loses data or kills a job: one manifest row each, with a specific status,
and the good inputs come out exactly as if the bad ones were not there."""
from __future__ import annotations

import io
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.integration.helpers import faces_by_id, read_output, run_preprocess

pytestmark = pytest.mark.integration


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (decoding it would need GBs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def no_face_image() -> bytes:
    y, x = np.mgrid[0:240, 0:320]
    image = ((x + y) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def sample_local(tmp_path_factory, ray_cluster):
    from fer_ray.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("sample")
    write_sample_data(str(root))
    return root


def copy_good_folder(sample_local, dest, per_class: int = 2):
    """A small folder tree of good images taken from the sample data."""
    for cls in ("happiness", "angry", "neutral"):
        src = next(p for p in (sample_local / "folder").iterdir() if p.name.lower() == cls)
        os.makedirs(dest / cls)
        for path in sorted(src.iterdir())[:per_class]:
            shutil.copy(path, dest / cls / path.name)


BAD_FOLDER_FILES = {
    "happiness/empty.jpg": (lambda good: b"", "empty_file"),
    "happiness/truncated.jpg": (lambda good: good[: len(good) // 2], "decode_error"),
    "angry/random.jpg": (lambda good: np.random.default_rng(0).bytes(5000), "decode_error"),
    "angry/huge.png": (lambda good: png_header_claiming(30000, 30000), "too_large"),
    "neutral/no_face.png": (lambda good: no_face_image(), "no_face"),
    "misc/who_knows.jpg": (lambda good: good, "unknown_class"),
}


def test_folder_bad_files(sample_local, tmp_path):
    good_root, mixed_root = tmp_path / "good", tmp_path / "mixed"
    copy_good_folder(sample_local, good_root)
    shutil.copytree(good_root, mixed_root)
    a_jpeg = next(p for p in good_root.rglob("*.jpg")).read_bytes()
    for name, (make, _) in BAD_FOLDER_FILES.items():
        (mixed_root / name).parent.mkdir(exist_ok=True)
        (mixed_root / name).write_bytes(make(a_jpeg))

    run_preprocess("folder", str(good_root), str(tmp_path / "out_good"))
    run_preprocess("folder", str(mixed_root), str(tmp_path / "out_mixed"))

    manifest = {r["source_uri"]: r for r in read_output(str(tmp_path / "out_mixed"), "manifest").to_pylist()}
    assert len(manifest) == sum(1 for p in mixed_root.rglob("*") if p.is_file())
    for name, (_, status) in BAD_FOLDER_FILES.items():
        row = manifest[str(mixed_root / name)]
        assert row["status"] == status and row["error"], row
        assert row["n_faces"] == 0
    assert "30000x30000" in manifest[str(mixed_root / "angry/huge.png")]["error"]
    assert_same_faces(tmp_path / "out_good", tmp_path / "out_mixed", good_root, mixed_root)


def assert_same_faces(out_good, out_mixed, good_root, mixed_root):
    good, mixed = faces_by_id(str(out_good)), faces_by_id(str(out_mixed))
    mixed_sources = {r["source_uri"].replace(str(mixed_root), str(good_root)) for r in mixed.values()}
    assert mixed_sources == {r["source_uri"] for r in good.values()}
    good_faces = {(r["source_uri"], r["face_index"]): r for r in good.values()}
    for row in mixed.values():
        twin = good_faces[(row["source_uri"].replace(str(mixed_root), str(good_root)), row["face_index"])]
        assert row["face"] == twin["face"] and row["landmarks"] == twin["landmarks"]


def test_fer2013_bad_rows(sample_local, tmp_path):
    lines = (sample_local / "fer2013" / "fer2013.csv").read_text().splitlines()
    header, good = lines[0], lines[1:9]
    label, pixels, usage = good[0].split(",")
    bad = {
        f"{label},{' '.join(pixels.split()[:2000])},{usage}": ("bad_pixels", "2000"),
        f"{label},{pixels.replace(pixels.split()[17], 'abc', 1)},{usage}": ("bad_pixels", "abc"),
        f"9,{pixels},{usage}": ("bad_label", "9"),
        f"x,{pixels},{usage}": ("bad_label", "x"),
        f"{label},{pixels}": ("bad_row", "got 2"),
    }
    (tmp_path / "good.csv").write_text("\n".join([header, *good]) + "\n")
    # bad rows between good ones, so the good rows' line numbers shift: compare by content
    (tmp_path / "mixed.csv").write_text("\n".join([header, good[0], *bad, *good[1:]]) + "\n")
    run_preprocess("fer2013", str(tmp_path / "good.csv"), str(tmp_path / "out_good"))
    run_preprocess("fer2013", str(tmp_path / "mixed.csv"), str(tmp_path / "out_mixed"))

    manifest = read_output(str(tmp_path / "out_mixed"), "manifest").to_pylist()
    assert len(manifest) == len(good) + len(bad)
    by_line = {int(r["source_uri"].rsplit("=", 1)[1]): r for r in manifest}
    for line, (status, detail) in zip(range(3, 3 + len(bad)), bad.values()):
        assert by_line[line]["status"] == status and detail in by_line[line]["error"], by_line[line]
    good_faces = sorted(r["face"] for r in read_output(str(tmp_path / "out_good"), "faces").to_pylist())
    mixed_faces = sorted(r["face"] for r in read_output(str(tmp_path / "out_mixed"), "faces").to_pylist())
    assert good_faces == mixed_faces and len(good_faces) == len(good)


def test_affectnet_missing_and_bad_annotations(sample_local, tmp_path):
    root = tmp_path / "affectnet"
    shutil.copytree(sample_local / "affectnet", root)
    images = sorted((root / "train_set" / "images").iterdir())
    missing, relabelled = images[0], images[1]
    for suffix in ("_exp", "_val", "_aro", "_lnd"):
        (root / "train_set" / "annotations" / f"{missing.stem}{suffix}.npy").unlink()
    np.save(root / "train_set" / "annotations" / f"{relabelled.stem}_exp.npy", np.array("12"))

    run_preprocess("affectnet", str(root), str(tmp_path / "out"))
    manifest = {r["source_uri"]: r for r in read_output(str(tmp_path / "out"), "manifest").to_pylist()}
    assert len(manifest) == len(list(root.rglob("*.jpg")))
    assert manifest[str(missing)]["status"] == "missing_annotation"
    assert "_exp.npy" in manifest[str(missing)]["error"]
    assert manifest[str(relabelled)]["status"] == "bad_label" and "12" in manifest[str(relabelled)]["error"]
    others = [r for uri, r in manifest.items() if uri not in (str(missing), str(relabelled))]
    assert all(r["status"] == "ok" for r in others)


def test_rerun_replaces_not_duplicates(sample_local, tmp_path):
    out = str(tmp_path / "out")
    run_preprocess("jaffe", str(sample_local / "jaffe"), out, limit=24)
    first = read_output(out, "faces")
    run_preprocess("jaffe", str(sample_local / "jaffe"), out, limit=24)
    second = read_output(out, "faces")
    assert first.num_rows == second.num_rows > 0
    assert sorted(first["sample_id"].to_pylist()) == sorted(second["sample_id"].to_pylist())
    assert read_output(out, "manifest").num_rows == 24
