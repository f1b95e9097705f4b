"""Batched FAN landmarks: face-alignment's network, one forward pass per batch on a GPU.

face-alignment's own API crops each face with OpenCV, runs the network one face at a
time and decodes heatmaps in Python loops. Here every step works on the whole batch:
face windows are cut on the CPU (integer slicing only), then resized, normalised,
run through the network (on a CPU face by face, which is faster there) and decoded on
the model's device.

The answer is face-alignment's: the same face window (centre and scale from the box,
reference scale 195), the same bilinear resize to 256 px, the same heatmap decoding
(arg-max, a quarter-pixel step towards the larger neighbour, then the inverse window
transform truncated to whole pixels, as face-alignment does).
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch

from fer_ray.config import PRECISIONS
from fer_ray.face68 import MIRROR, N_POINTS
from fer_ray.vision.boxes import to_rgb
from fer_ray.weights import NETWORK_WEIGHTS, network_weights

CROP = 256  # network input side
REFERENCE_SCALE = 195.0  # face-alignment's box-size-to-scale divisor (all its detectors but a few)
CENTER_Y_OFFSET = 0.12  # the window centre sits 12% of the box height above the box centre
# torch dtype of each face.precision: fp32 -> float32, bf16 -> bfloat16, fp16 -> float16
DTYPES = {name: getattr(torch, name.replace("bf", "bfloat").replace("fp", "float")) for name in PRECISIONS}


def load_fan(path: str, kind: str = "fan", device: str = "cpu", precision: str = "fp32") -> torch.nn.Module:
    """face-alignment's FAN (4 stacked hourglasses) with the state dict at `path`."""
    from face_alignment.models import FAN

    net = FAN(4)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"face.landmark_model: {path} is not a {NETWORK_WEIGHTS[kind][0]} "
                         f"state dict ({str(err).splitlines()[0]})") from None
    # channels-last: a few % faster per face on the CPU here (real crops); cuDNN's
    # tensor-core convolutions want it on GPUs
    return net.to(device, dtype=DTYPES[precision]).to(memory_format=torch.channels_last).eval()


def face_windows(boxes: np.ndarray, reference_scale: float = REFERENCE_SCALE):
    """Per box: window centre (N,2), scale (N,), and the integer window corners ul, br (N,2)
    in image pixels, computed exactly as face-alignment's `crop` (float32 inverse, truncated)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    sides = boxes[:, 2:] - boxes[:, :2]
    centers = boxes[:, 2:] - sides / 2.0
    centers[:, 1] -= sides[:, 1] * CENTER_Y_OFFSET
    scales = sides.sum(axis=1) / reference_scale
    inverse = torch.inverse(torch.from_numpy(window_matrix(centers, scales, CROP)).float())
    corners = torch.tensor([[1.0, 1.0, 1.0], [CROP, CROP, 1.0]]).T  # (3,2): ul, br in crop pixels
    ul_br = torch.matmul(inverse, corners)[:, :2].int().numpy()  # (N,2 xy,2 corners)
    return centers, scales, ul_br[:, :, 0], ul_br[:, :, 1]


def window_matrix(centers: np.ndarray, scales: np.ndarray, resolution: int) -> np.ndarray:
    """(N,3,3) image -> window transform of face-alignment (window side = 200 x scale)."""
    h = 200.0 * scales
    t = np.zeros((len(scales), 3, 3))
    t[:, 0, 0] = t[:, 1, 1] = resolution / h
    t[:, 0, 2] = resolution * (-centers[:, 0] / h + 0.5)
    t[:, 1, 2] = resolution * (-centers[:, 1] / h + 0.5)
    t[:, 2, 2] = 1.0
    return t


def cut_windows(image: np.ndarray, ul: np.ndarray, br: np.ndarray) -> list[np.ndarray]:
    """The (h,w,3) uint8 window of each face, zero outside the image (face-alignment's
    padding). Slicing only: resizing happens on the device."""
    image = to_rgb(image)
    height, width = image.shape[:2]
    windows = []
    for (x0, y0), (x1, y1) in zip(ul, br):
        window = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            window[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        windows.append(window)
    return windows


def stack_windows(windows: list[np.ndarray], device: str) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Windows of different sizes as one zero-padded uint8 tensor (N,H,W,3) on the device,
    and their (h, w) sizes: one host-to-device copy for the batch."""
    height = max(w.shape[0] for w in windows)
    width = max(w.shape[1] for w in windows)
    padded = np.zeros((len(windows), height, width, 3), np.uint8)
    for i, window in enumerate(windows):
        padded[i, :window.shape[0], :window.shape[1]] = window
    return torch.from_numpy(padded).to(device, non_blocking=True), [w.shape[:2] for w in windows]


def resize_windows(windows: torch.Tensor, sizes: list[tuple[int, int]], side: int = CROP) -> torch.Tensor:
    """Each window resized to side x side exactly as OpenCV's INTER_LINEAR resizes 8-bit
    images (face-alignment's `crop` uses it): 11-bit fixed-point weights, a horizontal then
    a vertical pass with its rounding; (N,3,side,side) float in [0,1].

    Bit-exact, not just close: a random test network's heatmap peaks can be near-ties
    that one grey level flips, and with real weights the same input gives the same answer.
    """
    device, n = windows.device, windows.shape[0]
    ys0, ys1, b0, b1 = _fixed_point_taps([h for h, _ in sizes], side, clamp_weights=False, device=device)
    xs0, xs1, a0, a1 = _fixed_point_taps([w for _, w in sizes], side, clamp_weights=True, device=device)
    index = torch.arange(n, device=device)[:, None, None]
    pixels = windows.int()

    def horizontal(rows):  # (N,side,side,3) int32: source rows resized along x, x2048
        return (pixels[index, rows[:, :, None], xs0[:, None, :]] * a0[:, None, :, None]
                + pixels[index, rows[:, :, None], xs1[:, None, :]] * a1[:, None, :, None])

    top = ((horizontal(ys0) >> 4) * b0[:, :, None, None]) >> 16
    bottom = ((horizontal(ys1) >> 4) * b1[:, :, None, None]) >> 16
    out = ((top + bottom + 2) >> 2).clamp(0, 255)
    return out.permute(0, 3, 1, 2).float() / 255.0


def _fixed_point_taps(lengths: list[int], side: int, clamp_weights: bool, device):
    """Per window: the two source indices and 11-bit weights of each output pixel, as
    OpenCV computes them (float32 positions; along x the weight is clamped at the edges,
    along y only the row index is)."""
    taps = [_taps_1d(length, side, clamp_weights) for length in lengths]
    return [torch.from_numpy(np.stack(column)).to(device) for column in zip(*taps)]


def _taps_1d(length: int, side: int, clamp_weights: bool):
    scale = 1.0 / (side / length)
    position = ((np.arange(side) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        outside = (first < 0) | (first >= length - 1)
        fraction[outside] = 0
        first = np.clip(first, 0, length - 1)
    weight1 = np.rint(fraction * np.float32(2048)).astype(np.int32)
    weight0 = np.rint((np.float32(1) - fraction) * np.float32(2048)).astype(np.int32)
    return np.clip(first, 0, length - 1), np.clip(first + 1, 0, length - 1), weight0, weight1


@torch.inference_mode()
def heatmaps(net: torch.nn.Module, crops: torch.Tensor, flip_input: bool = False) -> torch.Tensor:
    """(N,68,64,64) float32 heatmaps of the last hourglass: on a GPU one forward pass for
    the batch; on a CPU face by face (with flip_input, a face and its mirror image per
    pass). The mirrored crops' heatmaps, mirrored back, are added, as face-alignment does.

    Why not one pass on a CPU too: there batching only costs. Measured here (2 cores,
    real face crops): 0.49-0.52 s per face one at a time, 0.55-0.58 s in passes of 8
    (one face's activations stay in cache).
    """
    dtype = next(net.parameters()).dtype
    step = len(crops) if crops.is_cuda else 1
    chunks = []
    for start in range(0, len(crops), step):
        part = crops[start:start + step]
        batch = torch.cat([part, part.flip(-1)]) if flip_input else part
        out = net(batch.to(dtype).contiguous(memory_format=torch.channels_last))[-1].float().contiguous()
        chunks.append(out[:len(part)] + out[len(part):][:, list(MIRROR)].flip(-1) if flip_input else out)
    return torch.cat(chunks)


def decode(maps: torch.Tensor, centers: np.ndarray, scales: np.ndarray):
    """Heatmaps -> (N,68,2) float32 image points and (N,68) peak scores.

    Vectorised version of face-alignment's get_preds_fromhm: arg-max, a quarter pixel
    towards the larger neighbour (inside the border), -0.5, then the inverse window
    transform, truncated to whole pixels as face-alignment's transform_np does.
    """
    n, points, height, width = maps.shape
    flat = maps.reshape(n, points, height * width)
    scores, index = flat.max(dim=-1)
    px, py = index % width, index // width
    inside = (px > 0) & (px < width - 1) & (py > 0) & (py < height - 1)
    cx, cy = px.clamp(1, width - 2), py.clamp(1, height - 2)

    def value(dy, dx):
        return flat.gather(-1, ((cy + dy) * width + cx + dx)[..., None])[..., 0]

    step_x = torch.sign(value(0, 1) - value(0, -1)) * 0.25 * inside
    step_y = torch.sign(value(1, 0) - value(-1, 0)) * 0.25 * inside
    heat = torch.stack([px + 1 + step_x, py + 1 + step_y], dim=-1) - 0.5
    heat = heat.float().cpu().numpy().astype(np.float64)
    return window_to_image(heat, centers, scales, height), scores.float().cpu().numpy()


def window_to_image(points: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                    resolution: int) -> np.ndarray:
    """Heatmap points (N,68,2) -> image pixels with face-alignment's inverse transform."""
    inverse = np.linalg.pinv(window_matrix(centers, scales, resolution))
    homogeneous = np.concatenate([points, np.ones(points.shape[:2] + (1,))], axis=-1)
    image_points = np.einsum("nij,npj->npi", inverse, homogeneous)[..., :2]
    return image_points.astype(np.int32).astype(np.float32)


class FanLandmarker:
    """FAN 68-point landmarks for many faces at once (2D `fan` or 3D `fan3d` weights).

    `predict_many(images, boxes)` runs one forward pass for all faces of all images;
    `__call__(image, boxes)` is the one-image form of the landmarker contract.
    """

    def __init__(self, kind: str = "fan", model_path: str = "", device: str = "cpu",
                 precision: str = "fp32", flip_input: bool = False):
        self.name = kind
        path = network_weights(kind, model_path)
        self.device = device
        self.net = load_fan(path, kind, device, precision)
        self.flip_input = flip_input
        self.seconds = defaultdict(float)  # wall time per phase: prepare, forward, decode

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.predict_many([image], [boxes])[0]

    def predict_many(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, (n_i,68,2) float32 points in image pixels for its n_i boxes."""
        counts = [len(np.asarray(b).reshape(-1, 4)) for b in boxes]
        if sum(counts) == 0:
            return [np.zeros((0, N_POINTS, 2), np.float32) for _ in images]
        points, _ = self.landmarks(images, boxes)
        return np.split(points, np.cumsum(counts)[:-1])

    def landmarks(self, images: list[np.ndarray], boxes: list[np.ndarray]):
        """All faces' points (M,68,2) and peak scores (M,68), in image order."""
        maps, centers, scales = self.heatmaps(images, boxes)
        with self.timed("decode"):
            return decode(maps, centers, scales)

    def heatmaps(self, images: list[np.ndarray], boxes: list[np.ndarray]):
        """(M,68,64,64) heatmaps of all faces, with their window centres and scales."""
        with self.timed("prepare"):
            windows, centers, scales = [], [], []
            for image, image_boxes in zip(images, boxes):
                center, scale, ul, br = face_windows(image_boxes)
                windows += cut_windows(image, ul, br)
                centers.append(center)
                scales.append(scale)
            crops = resize_windows(*stack_windows(windows, self.device))
        with self.timed("forward"):
            maps = heatmaps(self.net, crops, self.flip_input)
        return maps, np.concatenate(centers), np.concatenate(scales)

    @contextmanager
    def timed(self, phase: str):
        """Adds the phase's wall time to self.seconds (the device is synchronised, so GPU
        work is counted in the phase that queued it)."""
        start = time.perf_counter()
        yield
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.seconds[phase] += time.perf_counter() - start
