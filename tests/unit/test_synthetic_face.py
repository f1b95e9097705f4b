"""Drawn faces (fer_ray.vision.synthetic_face) and the sample-data layouts built from them."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_ray import labels
from fer_ray.sample_data import write_sample_data
from fer_ray.vision.synthetic_face import EXPRESSIONS, draw_face, identity_for

HAAR = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"


def face(expression="neutral", subject="S001", seed=0, take=0, **kw):
    """A drawn face; take=None gives the template (no per-take jitter of pose or geometry)."""
    rng = None if take is None else np.random.default_rng(take)
    return draw_face(expression, identity_for(subject, seed), rng=rng, **kw)


def test_same_inputs_give_the_same_face_and_takes_differ():
    img, lm = face("happy", take=3)
    again, lm_again = face("happy", take=3)
    other, _ = face("happy", take=4)
    assert img.dtype == np.uint8 and img.shape == (256, 256) and lm.shape == (68, 2)
    assert np.array_equal(img, again) and np.array_equal(lm, lm_again)
    assert not np.array_equal(img, other)
    assert identity_for("S001", 0) == identity_for("S001", 0) != identity_for("S002", 0)


def test_colour_and_size_options():
    img, lm = face("sad", size=240, width=320, color=True)
    assert img.shape == (240, 320, 3)
    assert (lm >= 0).all() and (lm[:, 0] < 320).all() and (lm[:, 1] < 240).all()


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_landmarks_inside_the_image_and_in_anatomical_order(expression):
    for take in (1, 2):  # pose, size and expression strength vary per take
        jittered = face(expression, subject="S007", take=take)[1]
        assert ((jittered > 0) & (jittered < 255)).all()
    _, p = face(expression, subject="S007", take=None)
    x, y = p[:, 0], p[:, 1]
    assert (np.diff(x[0:17]) > 0).all() and y[8] == y[0:17].max()  # jaw left to right, chin lowest
    assert (np.diff(x[17:22]) > 0).all() and (np.diff(x[22:27]) > 0).all()
    assert y[17:27].max() < min(y[37], y[38], y[43], y[44])  # brows above the eyes
    assert x[36] < x[37] < x[38] < x[39] < x[42] < x[43] < x[44] < x[45]
    assert y[37] < y[41] and y[38] < y[40] and y[43] < y[47] and y[44] < y[46]  # lids
    assert (np.diff(y[27:31]) > 0).all() and (np.diff(x[31:36]) > 0).all()  # bridge, base
    assert y[40] < y[30] < y[51] < y[57] < y[8]  # eyes, nose tip, lips, chin
    assert x[48] < x[51] < x[54] and x[60] < x[62] < x[64] and y[62] <= y[66]
    assert x[39] < x[30] < x[42]


def test_landmarks_sit_on_the_drawn_features():
    img, p = face("surprise", subject="S003")
    for eye in (p[36:42], p[42:48]):
        cx, cy = np.round(eye.mean(0)).astype(int)
        assert img[cy - 2:cy + 3, cx - 2:cx + 3].min() < 60  # the pupil (beside its highlight)
    mx, my = np.round((p[62] + p[66]) / 2).astype(int)
    cheek = np.round((p[3] + p[31]) / 2).astype(int)
    assert img[my, mx] < 0.5 * img[cheek[1], cheek[0]]  # the open mouth is dark


def test_haar_finds_exactly_one_face_in_nearly_all_drawings():
    cascade = cv2.CascadeClassifier(HAAR)
    images = [face(e, subject=f"H{s}", take=s)[0] for e in EXPRESSIONS for s in range(4)]
    found = [len(cascade.detectMultiScale(img, scaleFactor=1.1, minNeighbors=5)) for img in images]
    assert np.mean(np.array(found) == 1) >= 0.9, found


def mouth_lift(p: np.ndarray) -> float:
    """How far the mouth corners sit above the lip centre (pixels, + = up)."""
    centre = (p[51, 1] + p[57, 1]) / 2
    return centre - (p[48, 1] + p[54, 1]) / 2


def dark_row(img: np.ndarray, x: float, y0: float, y1: float) -> float:
    """Darkness-weighted mean row of one pixel column (lips and mouth are darker than skin)."""
    rows = np.arange(int(y0), int(y1))
    column = img[rows, int(round(x))].astype(float)
    weight = np.clip(np.median(column) - column, 0, None) + 1e-6
    return float((rows * weight).sum() / weight.sum())


def test_expressions_differ_in_landmarks_and_in_pixels():
    drawn = {e: face(e, subject="S005") for e in EXPRESSIONS}
    lm = {e: p for e, (_, p) in drawn.items()}
    assert mouth_lift(lm["happy"]) > mouth_lift(lm["neutral"]) + 4 > mouth_lift(lm["sad"]) + 8
    eye_open = {e: np.linalg.norm(p[37] - p[41]) for e, p in lm.items()}
    assert eye_open["surprise"] > 1.5 * eye_open["anger"]
    assert eye_open["fear"] > eye_open["neutral"] > eye_open["disgust"]
    brow_rise = {e: p[39, 1] - p[21, 1] for e, p in lm.items()}  # inner brow above inner eye corner
    assert brow_rise["sad"] > brow_rise["neutral"] + 4 > brow_rise["anger"] + 8
    # The same columns of pixels, placed from the neutral face: corners rise in happy, fall in sad.
    ref = lm["neutral"]
    corner_x, centre_x = ref[48, 0] + 0.15 * (ref[54, 0] - ref[48, 0]), ref[51, 0]
    y0, y1 = ref[33, 1] + 8, ref[8, 1] - 12
    pixel_lift = {e: dark_row(drawn[e][0], centre_x, y0, y1) - dark_row(drawn[e][0], corner_x, y0, y1)
                  for e in ("happy", "neutral", "sad")}
    assert pixel_lift["happy"] > pixel_lift["neutral"] > pixel_lift["sad"], pixel_lift
    assert pixel_lift["happy"] - pixel_lift["sad"] > 4, pixel_lift


def test_contempt_is_one_sided():
    p = face("contempt")[1]
    centre = (p[51, 1] + p[57, 1]) / 2
    assert (centre - p[54, 1]) - (centre - p[48, 1]) > 4  # the image-right corner rises


def test_unknown_expression_names_the_valid_ones():
    with pytest.raises(ValueError, match="neutral"):
        face("bored")


# ---------------------------------------------------------------- sample data layouts

@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sample")
    return root, write_sample_data(str(root), seed=0)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_summary_matches_the_files_written(sample):
    root, written = sample
    assert set(written) == {"fer2013", "affectnet", "jaffe", "ckplus", "mpi", "folder", "videos", "baum2"}
    for layout, info in written.items():
        assert info["uri"] == str(root / layout)
        assert info["files"] == len(files_under(root / layout))
    with pytest.raises(ValueError, match="jaffe"):
        write_sample_data(str(root / "x"), layouts=["jafe"])


def test_fer2013_csv(sample):
    rows = list(csv.DictReader(io.StringIO((sample[0] / "fer2013" / "fer2013.csv").read_text())))
    assert list(rows[0]) == ["emotion", "pixels", "Usage"]
    assert 7 * 12 <= len(rows) <= 7 * 12 * 2
    assert {r["emotion"] for r in rows} == {str(i) for i in range(7)}
    usage = [r["Usage"] for r in rows]
    assert usage == sorted(usage, key=["Training", "PublicTest", "PrivateTest"].index)
    assert set(usage) == {"Training", "PublicTest", "PrivateTest"}
    pixels = np.array(rows[0]["pixels"].split(), dtype=int)
    assert pixels.size == 2304 and 0 <= pixels.min() and pixels.max() <= 255 and pixels.std() > 20


def test_affectnet_layout(sample):
    root = sample[0] / "affectnet"
    for split in ("train_set", "val_set"):
        images = files_under(root / split / "images")
        notes = files_under(root / split / "annotations")
        assert images and len(notes) == 4 * len(images)
        stem = images[0].stem
        assert Image.open(images[0]).size == (224, 224) and Image.open(images[0]).mode == "RGB"
        exp = np.load(root / split / "annotations" / f"{stem}_exp.npy")
        assert exp.shape == () and 0 <= int(exp) <= 7
        assert -1 <= float(np.load(root / split / "annotations" / f"{stem}_val.npy")) <= 1
        assert -1 <= float(np.load(root / split / "annotations" / f"{stem}_aro.npy")) <= 1
        lnd = np.load(root / split / "annotations" / f"{stem}_lnd.npy").reshape(-1, 2)
        assert lnd.shape == (68, 2) and ((lnd > 0) & (lnd < 224)).all()
    classes = {int(np.load(p)) for p in (root / "train_set" / "annotations").glob("*_exp.npy")}
    assert classes == set(range(8))
    train = {p.stem for p in (root / "train_set" / "images").iterdir()}
    assert not train & {p.stem for p in (root / "val_set" / "images").iterdir()}


def test_jaffe_layout(sample):
    files = files_under(sample[0] / "jaffe")
    names = [re.fullmatch(r"([A-Z]{2})\.([A-Z]{2})(\d)\.(\d+)\.tiff", p.name) for p in files]
    assert all(names)
    assert {m[1] for m in names} == {"KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"}
    assert {m[2] for m in names} == set(labels.JAFFE)
    assert sorted(int(m[4]) for m in names) == list(range(1, len(files) + 1))
    assert 10 * 7 * 2 <= len(files) <= 10 * 7 * 3
    image = np.array(Image.open(files[0]))
    assert image.shape == (256, 256) and image.dtype == np.uint8


def test_ckplus_layout(sample):
    root = sample[0] / "ckplus"
    sequences = sorted(p for p in (root / "cohn-kanade-images").glob("S*/*") if p.is_dir())
    assert len(sequences) == 30
    for seq in sequences[:3]:
        frames = sorted(seq.iterdir())
        subject, number = seq.parent.name, seq.name
        assert [f.name for f in frames] == [f"{subject}_{number}_{i:08d}.png" for i in range(1, 7)]
    emotion_files = files_under(root / "Emotion")
    assert 0.5 * len(sequences) < len(emotion_files) < len(sequences)  # some unlabelled, as in CK+
    codes = set()
    for path in emotion_files:
        subject, number, last = path.name.split("_")[:3]
        assert (root / "cohn-kanade-images" / subject / number / f"{subject}_{number}_{last}.png").exists()
        assert re.fullmatch(r" +\d\.\d{7}e\+00\n", path.read_text())
        codes.add(float(path.read_text()))
    assert codes == {float(c) for c in range(1, 8)}
    frame = cv2.imread(str(files_under(root / "cohn-kanade-images")[0]), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (245, 320)


def test_mpi_layout(sample):
    files = files_under(sample[0] / "mpi" / "Subset 01")
    assert len(files) == 5 * 6 * 2 + 5
    for path in files:
        actor, rest = path.name.split("_", 1)
        assert len(actor) == 4 and rest == f"{path.parent.name}_{rest[-7:]}"
    folders = {p.parent.name for p in files}
    assert {f for f in folders if labels.canonical_from_name(f) == labels.UNKNOWN} == {"agree_considered"}
    assert cv2.imread(str(files[0])).shape == (240, 320, 3)


def test_folder_layout(sample):
    root = sample[0] / "folder"
    folders = {p.name for p in root.iterdir()}
    known = {f for f in folders if labels.canonical_from_name(f) != labels.UNKNOWN}
    assert {labels.canonical_from_name(f) for f in known} == set(range(8))
    assert folders - known == {"misc"}
    assert (root / "happiness" / "astronaut.jpg").exists() and list((root / "misc").glob("lfw_*.png"))
    drawn = cv2.imread(str(root / "angry" / "anger_000.jpg"))
    assert drawn.shape == (240, 320, 3)
