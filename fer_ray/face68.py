"""The 68-point facial landmark layout (iBUG 300-W; dlib's and face-alignment's order).

Points are (x, y). Jaw 0-16 (image left to right, 8 = chin), brows 17-21 and 22-26,
nose bridge 27-30 (30 = tip), nose base 31-35, eyes 36-41 (on the image left: the
subject's right eye) and 42-47, outer lips 48-59, inner lips 60-67. Stored flat as
x0, y0, x1, y1, ... (N_VALUES floats per face).

Pure numpy: the schema, the vision functions, the models and training all read it.
"""
from __future__ import annotations

import numpy as np

N_POINTS = 68
N_VALUES = 2 * N_POINTS  # one flat landmarks value: x0, y0, x1, y1, ...

# Point groups. JAW, BROWS, NOSE, EYES and MOUTH cover the 68 points once, in index order.
JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
EYES = slice(36, 48)
MOUTH = slice(48, N_POINTS)
NON_JAW = slice(JAW.stop, N_POINTS)  # brows, nose, eyes and mouth
LEFT_EYE = slice(36, 42)  # the eye on the image left (the subject's right eye)
RIGHT_EYE = slice(42, 48)

NOSE_BOTTOM = 33  # the nose's lowest midline point, between the nostrils (its tip is 30)
UPPER_LIP_TOP = 51  # top of the upper lip, on the midline
EYE_CORNERS = (36, 39, 42, 45)  # outer, inner corner of the image-left eye; inner, outer of the other
# The points expressions move least (nose bridge and base, eye corners): fusion fits the
# similarity transform that lays one face onto another on them.
STABLE_POINTS = np.r_[NOSE, EYE_CORNERS]
STABLE_POINTS.flags.writeable = False

# Left/right pairs; points on the midline (chin 8, nose bridge 27-30, nostril centre 33,
# lip centres 51 57 62 66) map to themselves.
_MIRROR_PAIRS = (
    *((i, 16 - i) for i in range(8)),  # jaw 0..7 <-> 16..9
    *((17 + i, 26 - i) for i in range(5)),  # brows 17..21 <-> 26..22
    (31, 35), (32, 34),  # nostrils
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),  # outer lips
    (60, 64), (61, 63), (65, 67),  # inner lips
)


def _mirror_permutation(pairs: tuple[tuple[int, int], ...], n: int = N_POINTS) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


# After a horizontal flip, new point i = old point MIRROR[i]: the subject's left eye
# corner, say, now sits where the right one was. An involution (flipping twice is identity),
# and face-alignment's shuffle_lr order, which FAN's flip_input relies on.
MIRROR: tuple[int, ...] = _mirror_permutation(_MIRROR_PAIRS)
