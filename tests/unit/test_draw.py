"""Contact sheets, PNG encoding, and tracked faces drawn on video frames."""
from __future__ import annotations

import numpy as np
import pytest

from fer_ray.vision.decode import decode_image
from fer_ray.vision.draw import contact_sheet, draw_tracked_faces, encode_png, face_caption, track_colour


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


def grey_frame(height: int = 120, width: int = 180) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)


def test_tracked_faces_get_a_box_in_their_track_colour():
    frame = grey_frame()
    drawn = draw_tracked_faces(frame, [(20, 40, 80, 110), (100, 30, 170, 100)], [0, 1], ["#0 sad 0.71", "#1 x 0.5"])
    assert drawn.shape == frame.shape and (frame == 128).all()  # a copy: the frame is left as it was
    for (x0, y0, x1, y1), track in (((20, 40, 80, 110), 0), ((100, 30, 170, 100), 1)):
        colour = track_colour(track)
        for y, x in ((70, x0), (70, x1), (y1, 50 if track == 0 else 130)):  # left, right, bottom edges
            assert tuple(drawn[y, x]) == colour, (track, y, x)
        assert (drawn[y0 + 10:y1 - 10, x0 + 10:x1 - 10] == 128).all()  # the face itself is not covered
    assert track_colour(0) != track_colour(1)


def test_a_caption_sits_above_the_box_or_inside_it_at_the_top_edge():
    above = draw_tracked_faces(grey_frame(), [(20, 60, 80, 110)], [0], ["#0 happy 0.90"])
    assert (above[30:58, 20:80] != 128).any() and (above[:25] == 128).all()
    top = draw_tracked_faces(grey_frame(), [(20, 0, 80, 110)], [2], ["#2 happy 0.90"])
    band = top[2:12, 24:70]
    on_band = (band == track_colour(2)).all(axis=2)
    assert (band == 128).all(axis=2).mean() < 0.05  # the band covers the frame there,
    assert on_band.any() and not on_band.all()  # with the text on it


def test_grey_frames_and_no_faces():
    grey = np.full((50, 60), 90, np.uint8)
    drawn = draw_tracked_faces(grey, [], [], [])
    assert drawn.shape == (50, 60, 3) and (drawn == 90).all()
    with pytest.raises(ValueError):  # every box needs its track and caption
        draw_tracked_faces(grey, [(1, 1, 20, 20)], [0], [])


def test_a_caption_at_the_right_edge_stays_in_the_frame():
    drawn = draw_tracked_faces(grey_frame(), [(150, 50, 179, 100)], [1], ["#1 surprise 0.99"])
    assert (drawn[30:49, :150] != 128).any()  # the band moved left of the box to fit
    assert face_caption(3, "sad", 0.456) == "#3 sad 0.46"
