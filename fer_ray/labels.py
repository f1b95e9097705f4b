"""The one place for label sets: the canonical 8 classes, per-dataset codes, the 42 mixed classes.

Canonical order is AffectNet's, so AffectNet labels need no mapping.
"""
from __future__ import annotations

import itertools
import math

CANONICAL = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
UNKNOWN = -1
CANONICAL_INDEX = {name: i for i, name in enumerate(CANONICAL)}

# FER2013 `emotion` column: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
FER2013 = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# CK+ and BAUM-2 emotion files: one float in this coding.
CKPLUS = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sad", "surprise")
# JAFFE file-name codes (KA.AN1.39.tiff).
JAFFE = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad", "SU": "surprise"}

# Folder names people actually use for classes, mapped to canonical names.
SYNONYMS = {
    "neutral": "neutral", "neutrality": "neutral", "calm": "neutral", "ne": "neutral",
    "happy": "happy", "happiness": "happy", "joy": "happy", "smile": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "anger": "anger", "angry": "anger", "mad": "anger", "an": "anger",
    "contempt": "contempt", "contemptuous": "contempt", "co": "contempt",
}

# Seed 000's mixed classes: the 7 basic expressions in alphabetical order.
BASIC7 = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")
MIXED_PAIRS = tuple(itertools.permutations(BASIC7, 2))  # (primary, secondary); index = position


# Label sets a model head can predict, by name: class names in index order.
LABEL_SETS = {
    "canonical8": CANONICAL,
    "basic7": BASIC7,
    "mixed42": tuple(f"{p}+{s}" for p, s in MIXED_PAIRS),
    "fer2013": FER2013,  # the FER2013 coding's order: models trained on it (mini_xception's weights)
}


def label_name(index: int) -> str:
    """Canonical name of a canonical index; '' for unknown."""
    return CANONICAL[index] if 0 <= index < len(CANONICAL) else ""


def canonical_from_name(name: str) -> int:
    """Canonical index for a class name or synonym (case-insensitive); UNKNOWN if not known."""
    canonical = SYNONYMS.get(name.strip().lower())
    return CANONICAL_INDEX[canonical] if canonical else UNKNOWN


def mixed_index(primary: str, secondary: str) -> int:
    """Index 0-41 of an ordered pair of distinct basic expressions (6 * p + rank of s)."""
    return MIXED_PAIRS.index((primary, secondary))


def mixed_pair(index: int) -> tuple[str, str]:
    """The (primary, secondary) pair of a mixed-class index."""
    return MIXED_PAIRS[index]


def parse_ckplus_code(data: bytes) -> tuple[int, str]:
    """(canonical label, '') from the bytes of a CK+ / BAUM-2 emotion file, or (UNKNOWN, why not).

    The file holds one number in CK+ coding, as CK+ writes it (`   6.0000000e+00`) or as a
    bare integer (`6`): the whole number is parsed (reading only its first character, as
    seed 001 did, takes ` ` for the float form and `1` for 10). A UTF-8 byte-order mark, as
    Windows editors write one, is not part of the number."""
    stripped = data.decode("utf-8-sig", "replace").strip()
    if not stripped:
        return UNKNOWN, "emotion file is empty"
    try:
        code = float(stripped)
    except ValueError:
        return UNKNOWN, f"emotion file holds {stripped[:40]!r}, not a number"
    if not math.isfinite(code) or code != int(code) or not 0 <= code < len(CKPLUS):
        return UNKNOWN, f"emotion code {stripped[:40]} outside CK+ coding 0-{len(CKPLUS) - 1}"
    return CANONICAL_INDEX[CKPLUS[int(code)]], ""
