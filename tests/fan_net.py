"""A FAN network for tests: face-alignment's architecture, seeded, shaped for stable answers.

A random FAN has near-ties between heatmap peaks that float noise (a batched convolution
sums in another order) could flip. So: batch-norm statistics from real face windows (the
heatmaps follow the image; most peaks lie inside the map, where the quarter-pixel step
applies), and a last layer that gives each landmark the feature channel with the most
distinct peak on these faces (gaps ~1e-3 of the map's range; float noise is ~1e-6).
"""
from __future__ import annotations

import numpy as np
import torch
from skimage import data

from fer_ray.vision import fan


def astronaut_faces():
    """The astronaut's face, a looser box, and a box running off the image's top-left."""
    image = data.astronaut()
    return [(image, np.array([[160.0, 20.7, 300.3, 190.2], [150.5, 30.0, 280.0, 175.9]])),
            (image, np.array([[-20.0, -15.0, 120.0, 140.0]]))]


def lfw_faces(n: int = 3):
    """Tiny grey faces (25x25), as in FER-style datasets."""
    faces = data.lfw_subset()[:n]
    return [((face * 255).astype(np.uint8), np.array([[2.0, 2.0, 23.0, 24.0]])) for face in faces]


def face_crops(faces) -> torch.Tensor:
    windows = []
    for image, boxes in faces:
        _, _, ul, br = fan.face_windows(boxes)
        windows += fan.cut_windows(image, ul, br)
    return fan.resize_windows(*fan.stack_windows(windows, "cpu"))


def calibrate_batch_norm(net: torch.nn.Module, crops: torch.Tensor) -> None:
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # plain average over the calibration batch
    net.train()
    with torch.no_grad():
        net(crops)
    net.eval()


def peak_distinctness(maps: torch.Tensor) -> torch.Tensor:
    """Per channel, the smallest (over faces) of: the gap between the highest and the
    second-highest heatmap value, and the neighbour differences that set the quarter-pixel
    step, relative to the map's range."""
    flat = maps.flatten(2)
    spread = (flat.max(-1).values - flat.min(-1).values).clamp(min=1e-12)
    top = flat.topk(2, dim=-1).values
    index = flat.argmax(-1).clamp(65, 64 * 63 - 66)
    step_x = (flat.gather(-1, (index + 1)[..., None]) - flat.gather(-1, (index - 1)[..., None]))[..., 0].abs()
    step_y = (flat.gather(-1, (index + 64)[..., None]) - flat.gather(-1, (index - 64)[..., None]))[..., 0].abs()
    gaps = torch.minimum(top[..., 0] - top[..., 1], torch.minimum(step_x, step_y)) / spread
    return gaps.min(dim=0).values


def shape_last_layer(net: torch.nn.Module, crops: torch.Tensor) -> float:
    """Landmark k's heatmap := the k-th most distinct feature channel; returns the least
    distinctness among the chosen ones."""
    seen = {}
    hook = net.bn_end3.register_forward_hook(lambda module, args, out: seen.update(x=torch.relu(out)))
    with torch.no_grad():
        net(crops)
    hook.remove()
    distinct = peak_distinctness(seen["x"])
    best = distinct.argsort(descending=True)[:68]
    with torch.no_grad():
        net.l3.weight.zero_()
        net.l3.weight[torch.arange(68), best, 0, 0] = 1.0
        net.l3.bias.zero_()
    return float(distinct[best].min())


def save_test_fan(path, seed: int = 0) -> float:
    """Build, shape and save the test FAN's state dict; returns its least peak distinctness."""
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    net = FAN(4)
    crops = face_crops(astronaut_faces() + lfw_faces())
    calibrate_batch_norm(net, crops)
    distinctness = shape_last_layer(net, crops)
    torch.save(net.state_dict(), path)
    return distinctness
