"""Deployment export: a trained family model wrapped for raw-pixel inputs, written as
TorchScript and ONNX with a JSON manifest, and a parity check of both against PyTorch.

The deployed graph takes what a serving client has at hand: images or clips as float32
pixel values 0..255 and landmarks in crop pixels. It applies the training split's
per-channel normalisation itself and returns softmax probabilities, so a client needs
neither the statistics nor the label-set logic beyond the class order in export.json.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fer_ray.models.registry import ModelSpec

TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "export.json"
OUTPUT_NAME = "probabilities"
BATCH_AXIS = "batch"
TRACE_BATCH = 2  # check_parity defaults to another size, to prove the batch axis is dynamic


class InferenceModel(nn.Module):
    """model + input normalisation + softmax, for deployment.

    forward(*inputs) takes the family's inputs positionally in spec.input_names order:
    'image' (B, C, H, W) or 'clip' (B, T, C, H, W) as float32 raw pixels 0..255, then
    'landmarks' (B, 68, 2) in crop pixels (passed through unchanged). Images and clips
    are normalised per channel as (x - mean[c]) / std[c]; the result is the model's
    softmax probabilities (B, num_classes).

    The variable arity is resolved at export time: torch.jit.trace and torch.export
    (the ONNX dynamo exporter) both record the concrete inputs, so the exported graphs
    have fixed named inputs. (torch.jit.script does not accept *inputs; use trace.)
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        channels = spec.channels if spec.input_size else 0
        mean, std = _statistics(mean, channels), _statistics(std, channels)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"export: {spec.name} has {channels} image channel(s); got {len(mean)} mean and {len(std)} std values"
            )
        if bool((std <= 0).any()):
            raise ValueError(f"export: std must be positive, got min {float(std.min()) if std.numel() else 'n/a'}")
        self.model = model.eval()
        self.spec = spec
        self.has_image = bool(spec.input_size)
        # (C, 1, 1) broadcasts over the trailing (C, H, W) of both (B, C, H, W) and (B, T, C, H, W).
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.eval()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.has_image:
            image, rest = inputs[0], inputs[1:]
            inputs = ((image - self.mean) / self.std,) + tuple(rest)
        return torch.softmax(self.model(*inputs), dim=-1)


def _statistics(values, channels: int) -> torch.Tensor:
    """Per-channel values (C,) become (C, 1, 1); per-pixel images (C, H, W) stay as they are.
    Either broadcasts over the trailing (C, H, W) of images and clips."""
    tensor = torch.as_tensor(np.asarray(values, dtype=np.float32))
    return tensor.view(-1, 1, 1) if tensor.ndim == 1 else tensor


def raw_example_inputs(spec: ModelSpec, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """spec.example_inputs with images/clips redrawn as uniform pixel values 0..255."""
    generator = torch.Generator().manual_seed(seed)
    inputs = spec.example_inputs(batch_size, generator=generator)
    return tuple(
        x if name == "landmarks" else torch.rand(x.shape, generator=generator) * 255.0
        for name, x in zip(spec.input_names, inputs)
    )


def _on_cpu(model: nn.Module) -> nn.Module:
    """The model itself when already on the CPU, else a CPU copy: exported graphs are traced
    on the CPU (no device constants baked in) and the caller's model stays where it is."""
    on_cpu = all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
    return model if on_cpu else copy.deepcopy(model).cpu()


def _onnx_export(wrapper: InferenceModel, inputs: tuple, spec: ModelSpec, path: str, opset: int) -> str:
    """torch.onnx.export, dynamo first, TorchScript-based exporter as the fallback.
    Returns which path worked ('dynamo' or 'torchscript')."""
    names = list(spec.input_names)
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=4096)
    # Batch dimension 0 of every input shares one symbol, so they must agree at run time.
    # forward(*inputs) takes one variadic argument: its spec is the tuple of per-input specs.
    dynamic_shapes = (tuple({0: batch} for _ in inputs),)
    try:
        with warnings.catch_warnings():
            # torch.export's deprecation notes and its remarks on the shared batch symbol and
            # nn.LSTM's flat weights are noise here; parity is checked separately.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            # verbose=False: the exporter would print its progress to stdout (8 lines of
            # "[torch.onnx] ..."); a failure still raises
            program = torch.onnx.export(
                wrapper, inputs, dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
                opset_version=opset, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
            )
        program.save(path, external_data=False)
        return "dynamo"
    except Exception as dynamo_error:  # noqa: BLE001 - any dynamo failure means: try the legacy exporter
        if os.path.exists(path):
            os.remove(path)
        warnings.warn(f"export: dynamo ONNX export of {spec.name} failed ({dynamo_error!r}); "
                      "falling back to the TorchScript-based exporter", RuntimeWarning, stacklevel=3)
        axes = {name: {0: BATCH_AXIS} for name in names + [OUTPUT_NAME]}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the legacy exporter is deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    wrapper, inputs, path, dynamo=False, input_names=names, output_names=[OUTPUT_NAME],
                    opset_version=opset, dynamic_axes=axes,
                )
        except Exception as legacy_error:
            raise RuntimeError(
                f"export: ONNX export of {spec.name} failed with both exporters: "
                f"dynamo: {dynamo_error!r}; legacy: {legacy_error!r}"
            ) from legacy_error
        return "torchscript"


def export(model: nn.Module, spec: ModelSpec, mean: Sequence[float], std: Sequence[float],
           output_dir: str, opset: int = 18) -> dict[str, str]:
    """Write model.torchscript.pt, model.onnx and export.json into output_dir (local, created
    if missing). Returns {'torchscript' | 'onnx' | 'manifest': local path}.

    Puts `model` in eval mode; a model on an accelerator is exported from a CPU copy.
    Nothing is downloaded; uploading is the caller's job.
    """
    os.makedirs(output_dir, exist_ok=True)
    wrapper = InferenceModel(_on_cpu(model.eval()), spec, mean, std)
    inputs = raw_example_inputs(spec, TRACE_BATCH)
    paths = {
        "torchscript": os.path.join(output_dir, TORCHSCRIPT_FILE),
        "onnx": os.path.join(output_dir, ONNX_FILE),
        "manifest": os.path.join(output_dir, MANIFEST_FILE),
    }

    with torch.no_grad():
        probabilities = wrapper(*inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
    traced.save(paths["torchscript"])

    exporter = _onnx_export(wrapper, inputs, spec, paths["onnx"], opset)

    manifest = {
        "spec": spec.to_dict(),
        # The statistics are baked into both exported graphs; per-pixel images would bloat
        # this file, so it records their shape (C,) per channel or (C, H, W) per pixel.
        "normalisation_shape": list(np.asarray(mean, dtype=np.float32).shape),
        "input_value_range": {"image": [0.0, 255.0], "clip": [0.0, 255.0], "landmarks": "crop pixels"},
        "inputs": [{"name": name, "shape": [-1, *x.shape[1:]], "dtype": "float32"}
                   for name, x in zip(spec.input_names, inputs)],
        "outputs": [{"name": OUTPUT_NAME, "shape": [-1, probabilities.shape[1]], "dtype": "float32"}],
        "num_classes": int(probabilities.shape[1]),
        "opset": opset,
        "onnx_exporter": exporter,
        "torch_version": torch.__version__,
    }
    with open(paths["manifest"], "w") as f:
        json.dump(manifest, f, indent=2)
    return paths


def check_parity(model: nn.Module, spec: ModelSpec, mean: Sequence[float], std: Sequence[float],
                 output_dir: str, batch_size: int = 3, atol: float = 1e-4) -> dict[str, float]:
    """Max |difference| of the exported TorchScript and ONNX probabilities from the
    InferenceModel's, on the same random raw inputs of batch_size (not the traced batch
    size, so the dynamic batch axis is exercised). Raises ValueError above atol."""
    import onnxruntime as ort

    wrapper = InferenceModel(_on_cpu(model), spec, mean, std)
    inputs = raw_example_inputs(spec, batch_size, seed=1)
    with torch.no_grad():
        expected = wrapper(*inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(os.path.join(output_dir, TORCHSCRIPT_FILE), map_location="cpu")
        from_script = scripted(*inputs)

    session = ort.InferenceSession(os.path.join(output_dir, ONNX_FILE), providers=["CPUExecutionProvider"])
    feed = {name: x.numpy() for name, x in zip(spec.input_names, inputs)}
    (from_onnx,) = session.run([OUTPUT_NAME], feed)

    diffs = {
        "torchscript": float((from_script - expected).abs().max()),
        "onnx": float((torch.from_numpy(from_onnx) - expected).abs().max()),
    }
    for kind, got in (("torchscript", tuple(from_script.shape)), ("onnx", tuple(from_onnx.shape))):
        if got != tuple(expected.shape):
            raise ValueError(f"export parity: {spec.name} {kind} output shape {got} != {tuple(expected.shape)}")
    bad = {kind: diff for kind, diff in diffs.items() if not diff <= atol}
    if bad:
        raise ValueError(f"export parity: {spec.name} exceeds atol {atol}: {bad}")
    return diffs
