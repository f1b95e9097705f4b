"""Checkpoints: one `checkpoint.pt` holding plain tensors and Python values only.

Everything needed to use a model travels in it (family spec, config, class names,
normalisation), and it loads with `torch.load(weights_only=True)`, so opening a
checkpoint never executes pickled code.
"""
from __future__ import annotations

import dataclasses
import io
import os
import posixpath

import numpy as np
import pyarrow.fs as pafs
import torch

from fer_ray import storage
from fer_ray.config import ConfigError, TrainConfig, apply_dict
from fer_ray.models import create_model, get_spec, pretrained
from fer_ray.models.registry import ModelSpec

FILENAME = "checkpoint.pt"
FORMAT_VERSION = 1


def make_checkpoint(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, cfg_dict: dict,
                    class_names: tuple[str, ...], norm: dict, epoch: int, history: list[dict],
                    face: dict | None = None) -> dict:
    """The checkpoint dict; `model` is the bare module (not the DDP wrapper).

    `face` is the preprocessing face config of the training data, so prediction crops
    new images exactly as the training faces were cropped.
    """
    return {
        "format_version": FORMAT_VERSION,
        "model_name": cfg_dict["model"],
        "spec": trained_spec(cfg_dict).to_dict(),
        "config": cfg_dict,
        "class_names": list(class_names),
        "norm": {key: torch.as_tensor(np.asarray(value, dtype=np.float32)) for key, value in norm.items()},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "epoch": epoch,
        "history": history,
        "face": face or {},
    }


def trained_spec(cfg_dict: dict) -> ModelSpec:
    """The family's spec with the clip length the model was built for (the data's, which
    the trainer puts in the config), so a clip checkpoint says which T it takes."""
    spec = get_spec(cfg_dict["model"])
    clip_length = cfg_dict.get("clip_length", 0)
    return dataclasses.replace(spec, clip_length=clip_length) if spec.needs_clips and clip_length else spec


def spec_of(checkpoint: dict) -> ModelSpec:
    """The spec a checkpoint's model was trained with (clip length included)."""
    return trained_spec(checkpoint["config"])


def to_bytes(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def save(checkpoint: dict, directory: str) -> str:
    """Write checkpoint.pt into a local directory; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILENAME)
    torch.save(checkpoint, path)
    return path


def load_bytes(data: bytes, source: str) -> dict:
    """Parse checkpoint bytes safely; a corrupt or foreign file is a ConfigError naming it."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip or a pickle with code
        raise ConfigError(f"checkpoint: {source} is not a readable fer-ray checkpoint: {err}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"checkpoint: {source} is not a fer-ray checkpoint (format {FORMAT_VERSION})")
    return checkpoint


def load_local(directory: str) -> dict:
    with open(os.path.join(directory, FILENAME), "rb") as f:
        return load_bytes(f.read(), directory)


def find(uri: str) -> str:
    """The checkpoint file a URI means: the file itself, <uri>/checkpoint.pt (a run's final
    checkpoint) or the newest <uri>/train/checkpoint_*/checkpoint.pt of an unfinished run;
    `pretrained` means the pretrained mini_xception's Keras file (models/pretrained.py)."""
    if uri == pretrained.NAME:
        uri = pretrained.hdf5_uri()
    if uri.endswith(".pt") or pretrained.is_keras_file(uri):
        candidates = [uri]
    else:
        candidates = [storage.join(uri, FILENAME)] + _epoch_checkpoints(uri)[::-1]
    for candidate in candidates:
        if storage.exists(candidate):
            return candidate
    raise ConfigError(f"checkpoint: no {FILENAME} at {uri} (nor under {storage.join(uri, 'train')})")


def _epoch_checkpoints(uri: str) -> list[str]:
    """Ray Train's per-epoch checkpoint files under a run, oldest first (names sort by time)."""
    fs, path = storage.resolve(storage.join(uri, "train"))
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return []
    files = sorted(i.path for i in infos if posixpath.basename(i.path) == FILENAME)
    return [storage.to_uri(fs, f) for f in files]


def newest_epoch_state(run_uri: str) -> dict | None:
    """The newest epoch checkpoint of a run that loads; an upload cut short by a crash is skipped."""
    return next(epoch_states(run_uri), None)


def epoch_states(run_uri: str):
    """The run's epoch checkpoints that load, newest first; an upload cut short by a crash is skipped."""
    for uri in reversed(_epoch_checkpoints(run_uri)):
        try:
            yield load_bytes(storage.read_bytes(uri), uri)
        except (ConfigError, OSError):
            continue


def load(uri: str) -> dict:
    """Find and load a checkpoint from a run URI, directory or file (local or s3://)."""
    return locate(uri)[1]


def locate(uri: str) -> tuple[str, dict]:
    """(the checkpoint file a URI means, its loaded contents); a Keras HDF5 file (the
    pretrained weights) is converted, not executed."""
    path = find(uri)
    if pretrained.is_keras_file(path):
        return path, from_keras(path)
    return path, load_bytes(storage.read_bytes(path), path)


def from_keras(uri: str, family: str = pretrained.MINI_XCEPTION.family) -> dict:
    """A checkpoint made from a Keras HDF5 file of `family` (the pretrained weights): its
    classes, face settings and [-1, 1] input scaling come with it."""
    weights = pretrained.PRETRAINED[family]
    model = create_model(family, num_classes=len(weights.class_names))
    model.load_state_dict(pretrained.keras_state(uri, family))
    return make_checkpoint(model=model, optimizer=None, cfg_dict={"model": family, "dropout": 0.0},
                           class_names=weights.class_names, norm=pretrained.pixel_norm(get_spec(family).input_size),
                           epoch=-1, history=[], face=pretrained.face_settings(family))


def config_of(checkpoint: dict) -> TrainConfig:
    cfg = TrainConfig()
    apply_dict(cfg, checkpoint["config"])
    return cfg


def build_model(checkpoint: dict, expect_family: str | None = None) -> torch.nn.Module:
    """The trained model in eval mode. `expect_family` guards against another family's checkpoint."""
    name = checkpoint["model_name"]
    if expect_family and expect_family != name:
        raise ConfigError(f"checkpoint: it holds a {name!r} model, not {expect_family!r}")
    cfg = config_of(checkpoint)
    model = create_model(name, num_classes=len(checkpoint["class_names"]), **architecture(cfg))
    load_weights(model, checkpoint["model"], f"checkpoint: weights do not fit family {name!r}",
                 "it was saved by another version of the family; train it again")
    return model.eval()


def load_weights(model: torch.nn.Module, weights: dict, what: str, advice: str) -> None:
    """model.load_state_dict(weights), or a one-line ConfigError `what (how they differ); advice`.
    Weights saved before a family changed shape (a layer added, a width changed) meet this;
    torch's own message lists every key over many lines."""
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise ConfigError(f"{what} ({weights_mismatch(model.state_dict(), weights)}); {advice}") from None


def weights_mismatch(expected: dict, saved: dict) -> str:
    """How saved weights differ from a model's: counts of missing, unexpected and reshaped
    tensors, each with its first name."""
    differences = {
        "missing": [name for name in expected if name not in saved],
        "unexpected": [name for name in saved if name not in expected],
        "of another shape": [name for name in expected if name in saved and saved[name].shape != expected[name].shape],
    }
    return ", ".join(f"{len(names)} {kind}, e.g. {names[0]!r}" for kind, names in differences.items() if names)


def architecture(cfg: TrainConfig) -> dict:
    """create_model's arguments, besides the family and classes, that shape the model: the
    same for training and for every rebuild from a checkpoint."""
    return {"dropout": cfg.dropout, "fc_size": cfg.fc_size, "clip_length": cfg.clip_length}


def check(uri: str, expect_family: str = "") -> tuple[str, dict]:
    """(path, state), built once on the driver so a bad checkpoint fails before any Ray work."""
    path, state = locate(uri)
    build_model(state, expect_family or None)
    if not state.get("class_names"):
        raise ConfigError(f"checkpoint: {uri} has no class names")
    return path, state
