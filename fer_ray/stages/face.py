"""FaceStage: decode -> detect -> landmarks -> level the eyes -> crop -> smooth -> resize.

Decoding happens inside this stage, not in a stage of its own: shipping full-size
decoded images (a 12-megapixel photo is 36 MB) through the object store between two
stages costs more than the decode itself. Inputs on a file system are read here too
(stages.fetch.fetched_by_face_stage); from object storage FetchStage reads them before.

A batch is decoded, searched and aligned in chunks whose decoded pixels stay within
face.max_batch_pixels (sizes read from the image headers first): decoding a whole batch of
large photos at once took one actor to 4 GB.

Output: an Arrow table of schema.FACE_ROWS: one row per face found, plus one placeholder
row for each input that gave no face; `is_face` and `is_manifest` tell the writer which
rows go to `faces/` and which carry the input's single manifest row (the first face's
row, or the placeholder). The columns already have the Parquet types, so neither Ray
(numpy batches become tensor columns) nor the writer converts them again.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pyarrow as pa

from fer_ray import labels, schema
from fer_ray.config import PreprocessConfig
from fer_ray.face68 import N_VALUES
from fer_ray.runtime import Capacity, check_face_actors
from fer_ray.schema import Status
from fer_ray.stages.base import Stage, batch_rows
from fer_ray.stages.fetch import FetchStage, fetched_by_face_stage
from fer_ray.vision.align import align_face
from fer_ray.vision.decode import ImageError, decode_image, header_pixels, pixels_to_image
from fer_ray.vision.detect import full_image_box
from fer_ray.vision.faces import Face, FaceExtractor

FER_ROW_PIXELS = 48 * 48  # a FER2013 row's face (pixels_to_image)


def attempt(function, *args):
    """function(*args), or the exception it raised (per-item failures become data)."""
    try:
        return function(*args)
    except Exception as err:  # noqa: BLE001 - one bad item must not end the job
        return err


def plan_chunks(sizes: list[int], budget: int) -> list[range]:
    """Consecutive runs of items (by position) whose sizes add up to at most budget, in order;
    an item larger than the budget on its own makes a chunk by itself."""
    chunks, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if total + size > budget and i > start:
            chunks.append(range(start, i))
            start, total = i, 0
        total += size
    if sizes:
        chunks.append(range(start, len(sizes)))
    return chunks


def sample_id(dataset: str, source_uri: str, face_index: int) -> str:
    """Stable id of a face: same input, same face -> same id, on every run and machine."""
    return hashlib.sha1(f"{dataset}|{source_uri}|{face_index}".encode()).hexdigest()[:20]


class FaceStage(Stage):
    is_actor = True  # the landmark model (~100 MB) loads once per actor
    # Uses a whole core in practice; 0.2 logical CPU per actor stays free for the light
    # read/fetch/write operators that feed it (LIGHT_CPUS each), so a pool sized to the
    # machine never starves them (with 1.0, two actors on two CPUs block the reader forever).
    num_cpus = 0.8
    batch_size = 16

    def __init__(self, cfg: PreprocessConfig):
        super().__init__(cfg)
        cv2.setNumThreads(1)  # one actor per CPU: OpenCV's own threads would only contend
        self.detector = cfg.face.resolved_detector(cfg.layout)
        self.extractor = FaceExtractor(cfg.face, self.detector, cfg.device, lazy_landmarker=True)
        self.face_shape = [cfg.face.size, cfg.face.size, cfg.face.channels]
        self.blank = bytes(int(np.prod(self.face_shape)))  # the crop of a row without a face
        self.fetcher = FetchStage(cfg) if fetched_by_face_stage(cfg) else None
        self.fetch_threads = ThreadPoolExecutor(FetchStage.threads) if self.fetcher else None

    @staticmethod
    def check_weights(cfg: PreprocessConfig) -> None:
        """Fail before any Ray work when a configured model file cannot be read."""
        from fer_ray.config import ConfigError
        from fer_ray.weights import NETWORK_WEIGHTS, dlib_predictor_path, weights_problem

        face, detector = cfg.face, cfg.face.resolved_detector(cfg.layout)
        dlib_default = dlib_predictor_path() if face.landmarker == "dlib" else ""
        problems = [weights_problem(face.landmarker, "face.landmark_model", face.landmark_model or dlib_default)]
        if detector in NETWORK_WEIGHTS or detector == "yunet":  # the other detectors need no file
            problems.append(weights_problem(detector, "face.detector_model", face.detector_model))
        for problem in filter(None, problems):
            raise ConfigError(problem)

    @classmethod
    def check_cluster(cls, cfg: PreprocessConfig, capacity: Capacity) -> None:
        """Fail before the run when the cluster cannot hold the actors: an actor asking for
        a GPU that no node has would wait for it forever."""
        check_face_actors(cfg.workers, cfg.num_gpus, cls.num_cpus, capacity)

    def __call__(self, batch: dict) -> pa.Table:
        rows = batch_rows(batch)
        if self.fetcher:  # rows that carry their bytes already (a caller's) are left as they are
            self.fetcher.fetch_all([row for row in rows if not row["data"]], self.fetch_threads)
        sizes = [self.decoded_pixels(row) for row in rows]
        out = []
        for chunk in plan_chunks(sizes, self.cfg.face.max_batch_pixels):
            out.extend(self.process([rows[i] for i in chunk]))
        return schema.table_from_rows(out, schema.FACE_ROWS)

    def process(self, rows: list[dict]) -> list[dict]:
        """The output rows of inputs decoded, searched and aligned together (one chunk)."""
        found = self.faces_of(self.decode_rows(rows), rows)
        out = []
        for i, row in enumerate(rows):
            faces, landmarker = found.get(i, ([], ""))
            out.extend(self.output_rows(row, faces, landmarker))
        return out

    def decoded_pixels(self, row: dict) -> int:
        """Pixels the row's image will hold once decoded, read from its header: 0 for a row
        that will not be decoded (it failed already, or its header is unreadable or over
        face.max_pixels, so decoding refuses it before allocating anything)."""
        if row["status"]:
            return 0
        if row["encoding"] == schema.FER_PIXELS:
            return FER_ROW_PIXELS
        pixels = header_pixels(row["data"])
        return pixels if pixels <= self.cfg.face.max_pixels else 0

    def decode_rows(self, rows: list[dict]) -> dict[int, np.ndarray]:
        """The decoded images of rows, by position; a row that cannot be decoded says why."""
        images = {i: self.decode_row(row) for i, row in enumerate(rows)}
        return {i: image for i, image in images.items() if image is not None}

    def decode_row(self, row: dict) -> np.ndarray | None:
        """The row's image; None when it has none or it cannot be read (the row says why)."""
        image = None if row["status"] else attempt(self.decode, row)
        if isinstance(image, Exception):
            self.fail(row, image)
            return None
        return image

    def faces_of(self, images: dict[int, np.ndarray], rows: list[dict]) -> dict[int, tuple[list[Face], str]]:
        """Faces of every decoded image (detection and landmarks batched); an image whose
        faces could not be found gets the error in its row instead."""
        annotated = [i for i in images if self.use_annotation(rows[i])]
        detected = [i for i in images if i not in annotated]
        results = {i: (attempt(self.faces_from_annotation, images[i], rows[i]["hint_landmarks"]), "annotation")
                   for i in annotated}
        for i, faces in zip(detected, self.extract_all([images[i] for i in detected])):
            results[i] = (faces, self.cfg.face.landmarker)
        found = {}
        for i, (faces, landmarker) in results.items():
            if isinstance(faces, Exception):
                self.fail(rows[i], faces)
            else:
                found[i] = (faces, landmarker)
        return found

    def extract_all(self, images: list[np.ndarray]) -> list:
        """Each image's faces, in one batched call; if that fails, image by image, so only
        the bad image carries the exception."""
        if not images:
            return []  # every image annotated (AffectNet's crops): the landmark model is not needed
        # loaded here, not in the per-image retry below: a model that cannot load fails the
        # batch (and the run), it is no image's fault
        self.extractor.load_landmarker()
        try:
            return self.extractor.extract_many(images)
        except Exception:  # noqa: BLE001 - retried one by one
            return [attempt(self.extractor.extract, image) for image in images]

    def use_annotation(self, row: dict) -> bool:
        """Dataset-provided landmarks replace detection when there is none to do (face crops)."""
        hint = np.asarray(row["hint_landmarks"], np.float32)
        return self.detector == "none" and hint.size == N_VALUES and bool(np.isfinite(hint).all())

    @staticmethod
    def fail(row: dict, err: Exception) -> None:
        if isinstance(err, ImageError):
            row["status"], row["error"] = err.status, str(err)
        else:
            row["status"], row["error"] = Status.FACE_ERROR, f"{type(err).__name__}: {err}"[:500]

    def decode(self, row: dict) -> np.ndarray:
        if row["encoding"] == schema.FER_PIXELS:
            return pixels_to_image(row["data"].decode("ascii", "replace"))  # grey; the extractor takes it
        return decode_image(row["data"], "rgb", self.cfg.face.max_pixels)

    def faces_from_annotation(self, image: np.ndarray, hint: np.ndarray) -> list[Face]:
        """Dataset-provided landmarks (AffectNet's _lnd.npy) instead of predicted ones."""
        boxes, _ = full_image_box(image)
        points = hint.reshape(-1, 2)
        face, crop_points = align_face(image, points, self.cfg.face, crop="box", box=boxes[0])
        return [Face(face, boxes[0], crop_points, 1.0)]

    def output_rows(self, row: dict, faces: list[Face], landmarker: str) -> list[dict]:
        if not row["status"]:
            row["status"], row["error"] = (Status.OK, "") if faces else (Status.NO_FACE, "no face found")
        if not faces:
            return [self.row_for(row, None, 0, landmarker, len(faces))]
        return [self.row_for(row, face, i, landmarker, len(faces)) for i, face in enumerate(faces)]

    def row_for(self, row: dict, face: Face | None, index: int, landmarker: str, n_faces: int) -> dict:
        """The row of one face found in the input (or, face None, the input's placeholder)."""
        found = {"face": self.blank} if face is None else {
            "face": face.face.tobytes(), "bbox": np.asarray(face.bbox, np.float32),
            "landmarks": np.asarray(face.landmarks, np.float32).reshape(-1), "det_score": face.det_score}
        return schema.row(
            schema.FACE_ROWS, sample_id=sample_id(row["dataset"], row["source_uri"], index),
            dataset=row["dataset"], source_uri=row["source_uri"], subject=row["subject"], split=row["split"],
            label=row["label"], label_name=labels.label_name(int(row["label"])), valence=row["valence"],
            arousal=row["arousal"], face_index=index, face_shape=self.face_shape,
            detector=self.detector, landmarker=landmarker, status=row["status"], error=row["error"],
            n_faces=n_faces, is_face=face is not None, is_manifest=index == 0, **found)
