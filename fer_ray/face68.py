"""The 68-point facial landmark layout (iBUG 300-W; dlib's and face-alignment's order).

Points are (x, y). Jaw 0-16 (image left to right, 8 = chin), brows 17-21 and 22-26,
nose bridge 27-30 (30 = tip), nose base 31-35, eyes 36-41 (on the image left: the
subject's right eye) and 42-47, outer lips 48-59, inner lips 60-67. Stored flat as
x0, y0, x1, y1, ... (N_VALUES floats per face).

Pure numpy: the schema, the vision functions, the models and training all read it.
"""
from __future__ import annotations

N_POINTS = 68
N_VALUES = 2 * N_POINTS  # one flat landmarks value: x0, y0, x1, y1, ...
