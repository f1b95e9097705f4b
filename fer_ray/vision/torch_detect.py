"""face-alignment's network face detectors (`sfd`, `blazeface`), batched.

face-alignment runs them one image at a time (its batch functions assume one image
size). Here `detect_many(images)` runs one forward pass per group of same-sized images
for S3FD, and one for the whole batch for BlazeFace (every image is scaled to its
128 px input first). Boxes and scores are face-alignment's; then, like every detector
here, boxes under min_face_size are dropped and the rest sorted largest first.
Weights come from face.detector_model (path or URI) or face-alignment's own cache.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from fer_ray.vision.boxes import keep_faces, to_rgb
from fer_ray.weights import network_weights

SFD_MEAN_BGR = (104.0, 117.0, 123.0)
SFD_VARIANCES = (0.1, 0.2)


class SfdDetector:
    """S3FD (single-shot scale-invariant face detector), face-alignment's default."""
    name = "sfd"

    def __init__(self, model_path: str = "", min_face_size: int = 24, device: str = "cpu",
                 threshold: float = 0.5):
        from face_alignment.detection.sfd.net_s3fd import s3fd

        path = network_weights("sfd", model_path)
        self.net = s3fd()
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.to(device).eval()
        self.device, self.min_face_size, self.threshold = device, min_face_size, threshold

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One forward pass per image size in the batch."""
        results = [None] * len(images)
        by_shape = defaultdict(list)
        for i, image in enumerate(images):
            by_shape[image.shape[:2]].append(i)
        for indices in by_shape.values():
            batch = np.stack([to_rgb(images[i]) for i in indices])
            for i, candidates in zip(indices, self.candidates(batch)):
                results[i] = self.boxes(candidates)
        return results

    @torch.inference_mode()
    def candidates(self, batch: np.ndarray) -> list[np.ndarray]:
        """Per image, (K,5) x0,y0,x1,y1,score of every anchor scoring over 0.05."""
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().flip(1)  # RGB -> BGR
        x = x - torch.tensor(SFD_MEAN_BGR, device=self.device).view(1, 3, 1, 1)
        outputs = self.net(x)
        found = [[] for _ in range(len(batch))]
        for level in range(len(outputs) // 2):
            scores = torch.softmax(outputs[2 * level], dim=1)[:, 1]
            for i, rows in enumerate(decode_level(scores, outputs[2 * level + 1], 2 ** (level + 2))):
                found[i].append(rows)
        return [np.concatenate(rows) for rows in found]

    def boxes(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from face_alignment.detection.sfd.bbox import nms

        if len(candidates):
            candidates = candidates[nms(candidates, 0.3)]
            candidates = candidates[candidates[:, 4] > self.threshold]
        return keep_faces(candidates[:, :4].astype(np.float32), candidates[:, 4].astype(np.float32),
                          self.min_face_size)


def decode_level(scores: torch.Tensor, offsets: torch.Tensor, stride: int) -> list[np.ndarray]:
    """S3FD boxes of one feature level (anchors of side 4 x stride centred on each cell),
    for every image of the batch; vectorised form of face-alignment's get_predictions."""
    out = []
    for image_scores, image_offsets in zip(scores, offsets):
        rows, cols = torch.nonzero(image_scores > 0.05, as_tuple=True)
        centres = torch.stack([cols, rows], dim=1).double() * stride + stride / 2
        loc = image_offsets[:, rows, cols].T.double()
        mid = centres + loc[:, :2] * SFD_VARIANCES[0] * stride * 4
        size = stride * 4 * torch.exp(loc[:, 2:] * SFD_VARIANCES[1])
        corners = torch.cat([mid - size / 2, mid + size / 2], dim=1)
        out.append(torch.cat([corners, image_scores[rows, cols, None].double()], dim=1).cpu().numpy())
    return out


class BlazeFaceDetector:
    """BlazeFace (front camera model, 128 px input), as face-alignment wraps it: each image is
    scaled so its shorter side is 128 px and centre-cropped to a square, so faces outside
    that square are not seen."""
    name = "blazeface"
    input_size = 128

    def __init__(self, model_path: str = "", min_face_size: int = 24, device: str = "cpu",
                 threshold: float = 0.5):
        from face_alignment.detection.blazeface.net_blazeface import BlazeFace

        path = network_weights("blazeface", model_path)
        self.net = BlazeFace(back_model=False)
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.load_anchors_from_npy(blazeface_anchors(), device)
        self.net.min_score_thresh, self.net.min_suppression_threshold = threshold, 0.3
        self.net.to(device).eval()
        self.min_face_size = min_face_size

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One forward pass for the whole batch."""
        from face_alignment.detection.blazeface.utils import resize_and_crop_image

        squares, placements = [], []
        for image in images:
            square, shift = resize_and_crop_image(to_rgb(image), self.input_size)
            squares.append(square)
            placements.append((min(image.shape[:2]), np.array(shift * 2, np.float32)))
        results = []
        for faces, (side, shift) in zip(self.net.predict_on_batch(np.stack(squares)), placements):
            faces = faces.cpu().numpy()
            boxes = faces[:, [1, 0, 3, 2]] * side + shift  # (ymin, xmin, ...) -> x0, y0, x1, y1
            results.append(keep_faces(boxes.astype(np.float32), faces[:, 16].astype(np.float32),
                                      self.min_face_size))
        return results


def blazeface_anchors(input_size: int = 128) -> np.ndarray:
    """The 896 SSD anchors of BlazeFace's front model (MediaPipe's anchor generation:
    strides 8 and 16 on a 128 px input, 2 and 6 anchors per cell, fixed size 1).
    Computed here, so no anchors file needs configuring."""
    anchors = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = input_size // stride
        for y in range(cells):
            for x in range(cells):
                anchors += [[(x + 0.5) / cells, (y + 0.5) / cells, 1.0, 1.0]] * per_cell
    return np.asarray(anchors, np.float32)
