"""Contact sheets and PNG encoding."""
from __future__ import annotations

import numpy as np
import pytest

from fer_ray.vision.decode import decode_image
from fer_ray.vision.draw import contact_sheet, encode_png


def faces_and_points(count: int, rgb_every: int = 2):
    faces, points = [], []
    for i in range(count):
        face = np.full((48, 48), 60 + i, np.uint8)
        faces.append(np.dstack([face] * 3) if i % rgb_every == 0 else face)
        points.append(np.tile([[24.0, 24.0]], (68, 1)) + np.linspace(-15, 15, 68)[:, None])
    return faces, points


def test_grid_shape():
    faces, points = faces_and_points(10)
    sheet = contact_sheet(faces, points, [f"face {i}" for i in range(10)], cols=4, scale=3)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    rows, cols = 3, 4
    assert sheet.shape[1] == cols * (48 * 3 + 2)
    assert sheet.shape[0] // rows > 48 * 3  # room for the caption under each face


def test_fewer_faces_than_columns():
    faces, points = faces_and_points(3)
    sheet = contact_sheet(faces, points, cols=8, scale=2)
    assert sheet.shape[1] == 3 * (48 * 2 + 2)


def test_landmarks_and_captions_are_drawn():
    faces, points = faces_and_points(1)
    plain = contact_sheet(faces, [None])
    dotted = contact_sheet(faces, points)
    captioned = contact_sheet(faces, [None], ["happy 0.93"])
    assert plain.shape == dotted.shape == captioned.shape
    colours = {tuple(c) for c in dotted.reshape(-1, 3)} - {tuple(c) for c in plain.reshape(-1, 3)}
    assert len(colours) >= 5  # a colour per landmark group (and their anti-aliased edges)
    assert (captioned[48 * 3:] > 128).any() and not (plain[48 * 3:] > 128).any()


def test_no_faces_is_an_error():
    with pytest.raises(ValueError, match="no faces"):
        contact_sheet([], [])


def test_encode_png_round_trip(astronaut):
    np.testing.assert_array_equal(decode_image(encode_png(astronaut)), astronaut)
    gray = astronaut[:, :, 0].copy()
    np.testing.assert_array_equal(decode_image(encode_png(gray), color="gray"), gray)
