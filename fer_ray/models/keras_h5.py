"""Keras HDF5 weights into torch, read with h5py: no TensorFlow, no Keras, nothing executed.

A Keras `.hdf5` model file keeps each layer's weights under `model_weights/<layer>/`, in the
order of its `weight_names` attribute, and the layers in `layer_names` order (the model's
own, inputs first). `mini_xception_state` walks the weighted layers in that order against
the torch MiniXception's modules in theirs, so a file whose layers were named differently
still converts, and a file of another architecture fails naming the first layer that does
not fit and both shapes.

Keras kernels are (height, width, in, out); torch's are (out, in, height, width). A depthwise
kernel is (height, width, in, multiplier) in Keras and (in * multiplier, 1, height, width) in
torch.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import torch

from fer_ray.config import ConfigError
from fer_ray.models.mini_xception import KERAS_BN_EPSILON, MiniXception

# torch module -> how its tensors come from a Keras layer's weights (by their Keras names)
CONV = {"kernel": ("weight", (3, 2, 0, 1)), "bias": ("bias", None)}
SEPARABLE = {"depthwise_kernel": ("depthwise.weight", (2, 3, 0, 1)),
             "pointwise_kernel": ("pointwise.weight", (3, 2, 0, 1))}
BATCH_NORM = {"gamma": ("weight", None), "beta": ("bias", None), "moving_mean": ("running_mean", None),
              "moving_variance": ("running_var", None)}
KINDS = {"Conv2D": CONV, "SeparableConv2D": SEPARABLE, "BatchNormalization": BATCH_NORM}


class KerasLayer(NamedTuple):
    name: str
    kind: str  # a KINDS key, told by the layer's weight names
    weights: dict[str, np.ndarray]  # short weight name ("kernel", "gamma", ...) -> array
    epsilon: float | None  # batch norm only, from the model config when the file has one


def mini_xception_layout() -> list[tuple[str, str]]:
    """(torch module prefix, Keras layer kind) of every weighted layer, in Keras' order: the
    stem, then per block its two separable convolutions before the shortcut, then the head."""
    layout = [("conv1", "Conv2D"), ("bn1", "BatchNormalization"), ("conv2", "Conv2D"), ("bn2", "BatchNormalization")]
    for block in range(4):
        at = f"blocks.{block}."
        layout += [(at + "sep1", "SeparableConv2D"), (at + "bn1", "BatchNormalization"),
                   (at + "sep2", "SeparableConv2D"), (at + "bn2", "BatchNormalization"),
                   (at + "shortcut", "Conv2D"), (at + "shortcut_bn", "BatchNormalization")]
    return layout + [("head", "Conv2D")]


def read_layers(path: str, source: str = "") -> list[KerasLayer]:
    """The weighted layers of a Keras HDF5 file, in the model's order."""
    import h5py

    source = source or path
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = [_text(n) for n in root.attrs.get("layer_names", [])]
            if not names:
                raise ConfigError(f"checkpoint: {source} holds no Keras layer weights (no layer_names)")
            epsilons = _batch_norm_epsilons(f.attrs.get("model_config"))
            layers = [_layer(root[name], name, epsilons.get(name), source) for name in names]
    except (OSError, KeyError) as err:
        raise ConfigError(f"checkpoint: {source} is not a readable Keras HDF5 model file: {err}") from None
    return [layer for layer in layers if layer is not None]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _batch_norm_epsilons(model_config) -> dict[str, float]:
    if model_config is None:
        return {}
    config = json.loads(_text(model_config))["config"]
    layers = config["layers"] if isinstance(config, dict) else config  # Keras 2.0 Sequential: a list
    return {layer["config"]["name"]: float(layer["config"]["epsilon"]) for layer in layers
            if layer["class_name"] == "BatchNormalization"}


def _layer(group, name: str, epsilon: float | None, source: str) -> KerasLayer | None:
    """One layer's weights by short name; None for a layer without weights."""
    full_names = [_text(n) for n in group.attrs.get("weight_names", [])]
    if not full_names:
        return None
    weights = {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[n]) for n in full_names}
    kind = next((kind for kind, table in KINDS.items() if set(weights) <= set(table)
                 and (set(weights) & {"kernel", "depthwise_kernel", "gamma", "moving_mean"})), "")
    if not kind:
        raise ConfigError(f"checkpoint: {source}: layer {name} has weights {sorted(weights)}, which are not a "
                          f"Conv2D, SeparableConv2D or BatchNormalization layer's")
    return KerasLayer(name, kind, weights, epsilon)


def mini_xception_state(path: str, source: str = "") -> tuple[dict[str, torch.Tensor], int]:
    """(the torch MiniXception state_dict, its number of classes) from a Keras mini-Xception
    HDF5 file; ConfigError naming the layer that does not fit (and both shapes) otherwise."""
    source = source or path
    layers, layout = read_layers(path, source), mini_xception_layout()
    if len(layers) != len(layout) or not layers:
        raise ConfigError(f"checkpoint: {source} has {len(layers)} weighted layers, mini_xception has "
                          f"{len(layout)}: it is another architecture")
    num_classes = layers[-1].weights["kernel"].shape[-1]
    expected = MiniXception(num_classes=num_classes).state_dict()
    state = {}
    for layer, (prefix, kind) in zip(layers, layout):
        if layer.kind != kind:
            raise ConfigError(f"checkpoint: {source}: layer {layer.name} is a {layer.kind}, mini_xception has a "
                              f"{kind} there ({prefix})")
        if kind == "BatchNormalization":
            _check_epsilon(layer, source)
        for short, array in layer.weights.items():
            target, order = KINDS[kind][short]
            key = f"{prefix}.{target}"
            state[key] = _converted(array, order, expected[key].shape, f"{source}: layer {layer.name} {short}")
    missing = [k for k, v in expected.items() if k not in state and v.is_floating_point()]
    if missing:
        raise ConfigError(f"checkpoint: {source} lacks weights for {', '.join(missing)}")
    return state, num_classes


def _converted(array: np.ndarray, order, shape: torch.Size, what: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(order) if order else array, np.float32))
    if tensor.shape != shape:
        needed = tuple(shape[i] for i in np.argsort(order)) if order else tuple(shape)
        raise ConfigError(f"checkpoint: {what} has shape {tuple(array.shape)}, mini_xception needs {needed}")
    return tensor


def _check_epsilon(layer: KerasLayer, source: str) -> None:
    if layer.epsilon is not None and not np.isclose(layer.epsilon, KERAS_BN_EPSILON):
        raise ConfigError(f"checkpoint: {source}: layer {layer.name} normalises with epsilon {layer.epsilon:g}, "
                          f"mini_xception with {KERAS_BN_EPSILON:g}")
