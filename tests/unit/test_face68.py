"""The 68-point layout: the mirror permutation and the point groups."""
from __future__ import annotations

import torch
from face_alignment.utils import shuffle_lr

from fer_ray.face68 import (
    BROWS,
    EYE_CORNERS,
    EYES,
    JAW,
    LEFT_EYE,
    MIRROR,
    MOUTH,
    N_POINTS,
    NOSE,
    NOSE_BOTTOM,
    RIGHT_EYE,
    UPPER_LIP_TOP,
)

MIDLINE = {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
FEATURES = (range(0, 17), range(17, 27), range(27, 31), range(31, 36), range(36, 48),
            range(48, 60), range(60, 68))


def test_mirror_is_an_involutive_permutation():
    assert sorted(MIRROR) == list(range(N_POINTS))
    assert all(MIRROR[MIRROR[i]] == i for i in range(N_POINTS))


def test_mirror_keeps_each_feature_and_fixes_exactly_the_midline():
    for group in FEATURES:
        assert {MIRROR[i] for i in group} == set(group)
    assert {i for i in range(N_POINTS) if MIRROR[i] == i} == MIDLINE


def test_mirror_is_face_alignments_left_right_order():
    """FAN's flip_input adds the mirrored face's heatmaps re-indexed by MIRROR, as
    face-alignment's shuffle_lr re-indexes them."""
    points = torch.arange(N_POINTS).reshape(N_POINTS, 1, 1)
    assert shuffle_lr(points).flatten().tolist() == list(MIRROR)


def test_groups_cover_every_point_once_in_order():
    covered = [i for group in (JAW, BROWS, NOSE, EYES, MOUTH) for i in range(N_POINTS)[group]]
    assert covered == list(range(N_POINTS))


def test_the_eyes_split_the_eye_group_and_swap_in_the_mirror():
    left, right = range(N_POINTS)[LEFT_EYE], range(N_POINTS)[RIGHT_EYE]
    assert [*left, *right] == list(range(N_POINTS)[EYES])
    assert sorted(MIRROR[i] for i in left) == list(right)
    assert sorted(MIRROR[i] for i in right) == list(left)


def test_fusion_points_are_symmetric_pairs_or_on_the_midline():
    """The similarity fit and the seam must not favour one side of the face."""
    assert [MIRROR[i] for i in EYE_CORNERS] == list(reversed(EYE_CORNERS))
    assert {NOSE_BOTTOM, UPPER_LIP_TOP} <= MIDLINE
