"""Deployment export: every family exports to TorchScript and ONNX, both agree with the
PyTorch InferenceModel at another batch size than the traced one, and the wrapper really
normalises raw pixels and returns probabilities."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fer_ray.models import create_model, get_spec
from fer_ray.training.export import InferenceModel, check_parity, export, raw_example_inputs

# c3d's default 4096-wide FC layers are not what these tests check; 64 keeps it quick.
SMALL_KWARGS = {"c3d": {"fc_size": 64}}


@pytest.fixture(scope="module", autouse=True)
def _reuse_onnx_op_registry():
    """Speed only: the dynamo exporter rebuilds its aten -> ONNX op registry on every export
    by parsing ~500 onnxscript functions (~1.7 s each time). Build it once per opset here.
    The registry is only read during export (no custom translation table is passed), so
    sharing it changes nothing but the time; if torch moves the internal, nothing is patched."""
    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry
    except ImportError:
        yield
        return
    build = ONNXRegistry.from_torchlib
    if not callable(build):
        yield
        return
    cache = {}

    def cached(cls, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = build(*args, **kwargs)
        return cache[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ONNXRegistry, "from_torchlib", classmethod(cached))
        yield


def _stats(name: str) -> tuple[list[float], list[float]]:
    """Plausible per-channel pixel statistics; distinct per channel to catch a mix-up."""
    spec = get_spec(name)
    channels = spec.channels if spec.input_size else 0
    return [110.0 + 10 * c for c in range(channels)], [50.0 + 5 * c for c in range(channels)]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **SMALL_KWARGS.get(name, {})).eval()


# One family per kind of input (image, image + landmarks, landmarks only, clip, RGB 224):
# the ONNX export costs seconds each on CI's 2 cores, and the wrapper is the same for all.
EXPORT_FAMILIES = ["dexpression_fer", "vgg_landmarks", "landmark_mlp", "cnn_lstm", "resnet18"]


@pytest.mark.parametrize("name", EXPORT_FAMILIES)
def test_export_parity(name, tmp_path, capfd):
    """One export per family (the ONNX exporter is the slow part), checked every way."""
    spec = get_spec(name)
    model = _model(name)
    mean, std = _stats(name)
    paths = export(model, spec, mean, std, str(tmp_path / "out"))
    assert set(paths) == {"torchscript", "onnx", "manifest"}
    assert "[torch.onnx]" not in capfd.readouterr().out  # the exporter's progress stays off the screen

    diffs = check_parity(model, spec, mean, std, str(tmp_path / "out"), batch_size=3, atol=1e-4)
    assert set(diffs) == {"torchscript", "onnx"}
    assert all(diff < 1e-4 for diff in diffs.values()), diffs

    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest["spec"] == spec.to_dict()
    assert manifest["normalisation_shape"] == [len(mean)]
    assert manifest["opset"] == 18
    assert manifest["num_classes"] == spec.default_num_classes
    assert [i["name"] for i in manifest["inputs"]] == list(spec.input_names)
    assert all(i["shape"][0] == -1 for i in manifest["inputs"])
    assert manifest["outputs"] == [{"name": "probabilities", "shape": [-1, spec.default_num_classes],
                                    "dtype": "float32"}]

    graph = onnx.load(paths["onnx"])
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {18}
    assert [i.name for i in graph.graph.input] == list(spec.input_names)
    assert [o.name for o in graph.graph.output] == ["probabilities"]
    for value in list(graph.graph.input) + list(graph.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name

    # Another batch size again (1: the edge a static export would specialise on), straight
    # through onnxruntime: the outputs are probability rows.
    session = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    inputs = raw_example_inputs(spec, 1, seed=2)
    (probabilities,) = session.run(None, {n: x.numpy() for n, x in zip(spec.input_names, inputs)})
    assert probabilities.shape == (1, spec.default_num_classes)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["dexpression_fer", "vgg_landmarks", "cnn_lstm"])
def test_inference_model_normalises_raw_pixels(name):
    """image/clip -> (x - mean[c]) / std[c] -> model -> softmax; landmarks pass through."""
    spec = get_spec(name)
    model = _model(name)
    mean, std = _stats(name)
    wrapper = InferenceModel(model, spec, mean, std)
    assert not wrapper.training and not model.training
    assert {"mean", "std"} <= dict(wrapper.named_buffers()).keys()
    assert not {"mean", "std"} & dict(wrapper.named_parameters()).keys()

    inputs = raw_example_inputs(spec, 2)
    channel = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    normalised = ((inputs[0] - channel[0]) / channel[1],) + inputs[1:]
    with torch.no_grad():
        got = wrapper(*inputs)
        expected = torch.softmax(model(*normalised), dim=-1)
        # Other statistics (here: none, raw pixels straight in) give another output.
        unnormalised = InferenceModel(model, spec, [0.0] * len(mean), [1.0] * len(std))(*inputs)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(2))
    assert (got - unnormalised).abs().max() > 1e-3, "changing the statistics must change the output"


def test_landmark_only_family_takes_no_statistics():
    spec = get_spec("landmark_mlp")
    model = _model("landmark_mlp")
    (landmarks,) = raw_example_inputs(spec, 2)
    with torch.no_grad():
        got = InferenceModel(model, spec, [], [])(landmarks)
        torch.testing.assert_close(got, torch.softmax(model(landmarks), dim=-1))
    with pytest.raises(ValueError, match="channel"):
        InferenceModel(model, spec, [0.5], [0.2])


def test_statistics_must_match_channels():
    spec = get_spec("resnet18")
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="3 image channel"):
        InferenceModel(model, spec, [0.5], [0.2])
    with pytest.raises(ValueError, match="positive"):
        InferenceModel(model, spec, [0.5] * 3, [0.2, 0.0, 0.2])


def test_legacy_onnx_exporter_fallback_and_parity_failure(tmp_path, monkeypatch):
    """Should the dynamo exporter fail on some model, the TorchScript-based one takes over,
    with a warning, the same names and batch axis, and the manifest saying which ran.
    (The quick legacy export also serves the parity-failure check.)"""
    spec = get_spec("landmark_mlp")
    model = _model("landmark_mlp")
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    with pytest.warns(RuntimeWarning, match="simulated dynamo failure"):
        paths = export(model, spec, [], [], str(tmp_path))
    assert json.loads((tmp_path / "export.json").read_text())["onnx_exporter"] == "torchscript"
    graph = onnx.load(paths["onnx"])
    assert [i.name for i in graph.graph.input] == ["landmarks"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert max(check_parity(model, spec, [], [], str(tmp_path)).values()) < 1e-4

    # check_parity compares against the model it is given: a changed model must fail.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5)
    with pytest.raises(ValueError, match="exceeds atol"):
        check_parity(model, spec, [], [], str(tmp_path))
