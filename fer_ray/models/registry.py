"""The model registry: one `ModelSpec` per family, looked up by name.

A spec says what a family eats (image size and channels, landmarks, clips) and which
label set its head predicts, so data loading and checkpoints need nothing but the name.
Families register themselves when `fer_ray.models` is imported; no weights load then.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch

from fer_ray.face68 import N_POINTS
from fer_ray.labels import LABEL_SETS


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a model family expects and predicts.

    input_size is the square image side in pixels (0 for landmark-only models);
    clip_length is the family's default number of frames per clip (0 for single images; a
    model is built for the clip length of its data, which its checkpoint records), and
    min_clip_length the fewest frames it can take;
    default_num_classes, when left at 0, is the size of the label set;
    default_lr is the AdamW learning rate a run of the family takes when none is given.
    """
    name: str
    input_size: int
    channels: int
    label_set: str
    builder: Callable[..., torch.nn.Module]
    needs_landmarks: bool = False
    needs_clips: bool = False
    clip_length: int = 0
    min_clip_length: int = 0
    default_num_classes: int = 0
    default_lr: float = 1e-3
    description: str = ""

    def __post_init__(self):
        if self.label_set not in LABEL_SETS:
            raise ValueError(f"{self.name}: label_set {self.label_set!r} is not one of {sorted(LABEL_SETS)}")
        if not self.default_num_classes:
            object.__setattr__(self, "default_num_classes", len(LABEL_SETS[self.label_set]))
        if self.needs_clips != (self.clip_length > 0):
            raise ValueError(f"{self.name}: needs_clips and clip_length > 0 must agree")

    @property
    def input_names(self) -> tuple[str, ...]:
        """Positional arguments of forward(), in order: 'image'/'clip' then 'landmarks'."""
        names = ()
        if self.input_size:
            names += ("clip",) if self.needs_clips else ("image",)
        if self.needs_landmarks:
            names += ("landmarks",)
        return names

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> tuple:
        """Random batch-first inputs of the declared shapes, for tests and smoke runs.

        Images are standard-normal (inputs are per-pixel standardised); landmarks are
        uniform over the crop, in crop pixels.
        """
        side = self.input_size
        shapes = {
            "image": (batch_size, self.channels, side, side),
            "clip": (batch_size, self.clip_length, self.channels, side, side),
        }
        inputs = []
        for name in self.input_names:
            if name == "landmarks":
                extent = side or 100  # landmark-only models: a 100 px crop, like enm's
                inputs.append(torch.rand(batch_size, N_POINTS, 2, generator=generator) * (extent - 1))
            else:
                inputs.append(torch.randn(*shapes[name], generator=generator))
        return tuple(inputs)

    def to_dict(self) -> dict:
        """Everything but the builder: travels with checkpoints."""
        fields = dataclasses.asdict(self)
        fields.pop("builder")
        return fields


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> ModelSpec:
    """Add a family; a name can be registered once (a silent override hides bugs)."""
    if name in _REGISTRY:
        raise ValueError(f"model: {name!r} is already registered")
    if spec.name != name:
        raise ValueError(f"model: spec name {spec.name!r} does not match {name!r}")
    _REGISTRY[name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"model: {name!r} is not a registered family; choose one of: {', '.join(list_models())}"
        ) from None


def create_model(name: str, num_classes: int | None = None, dropout: float | None = None, fc_size: int = 0,
                 clip_length: int = 0, **kw) -> torch.nn.Module:
    """A freshly initialised model; num_classes defaults to the family's label set size.

    dropout (when given and >= 0), fc_size and clip_length (when > 0) reach families whose
    builder has that argument; the others have no such layer to set, so one config (or a
    sweep) may name them for any family and leaves the others unchanged.
    """
    spec = get_spec(name)
    takes = inspect.signature(spec.builder).parameters
    options = {"dropout": dropout if dropout is not None and dropout >= 0 else None,
               "fc_size": fc_size or None, "clip_length": clip_length or None}
    kw.update({key: value for key, value in options.items() if value is not None and key in takes})
    return spec.builder(num_classes=num_classes or spec.default_num_classes, **kw)
