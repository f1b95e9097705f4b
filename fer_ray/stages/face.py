"""FaceStage: decode -> detect -> landmarks -> level the eyes -> crop -> smooth -> resize.

Decoding happens inside this stage, not in a stage of its own: shipping full-size
decoded images (a 12-megapixel photo is 36 MB) through the object store between two
stages costs more than the decode itself.

Output: one row per face found, plus one placeholder row for each input that gave no
face; `is_face` and `is_manifest` tell the writer which rows go to `faces/` and which
carry the input's single manifest row (the first face's row, or the placeholder).
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np

from fer_ray import labels, storage
from fer_ray.config import PreprocessConfig
from fer_ray.datasets.common import FER_PIXELS
from fer_ray.stages.base import Stage, batch_rows, rows_batch
from fer_ray.vision.align import align_face
from fer_ray.vision.decode import ImageError, decode_image, pixels_to_image
from fer_ray.vision.detect import full_image_box
from fer_ray.vision.faces import Face, FaceExtractor


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
        self.extractor = FaceExtractor(cfg.face, self.detector, cfg.device)
        channels = 3 if cfg.face.color == "rgb" else 1
        self.blank = np.zeros((cfg.face.size, cfg.face.size, channels), np.uint8)

    @staticmethod
    def check_weights(cfg: PreprocessConfig) -> None:
        """Fail before any Ray work when a configured model file cannot be read."""
        from fer_ray.config import ConfigError
        from fer_ray.weights import NETWORK_WEIGHTS, dlib_predictor_path, network_weights_problem

        face, problems = cfg.face, []
        detector = face.resolved_detector(cfg.layout)
        if face.landmarker == "dlib":
            problems.append(storage.check_readable(face.landmark_model or dlib_predictor_path()))
            problems[-1] = problems[-1] and f"face.landmark_model: {problems[-1]}"
        else:
            problems.append(network_weights_problem(face.landmarker, face.landmark_model))
        if detector in NETWORK_WEIGHTS:
            problems.append(network_weights_problem(detector, face.detector_model))
        elif detector == "yunet":
            problem = storage.check_readable(face.detector_model)
            problems.append(problem and f"face.detector_model: {problem}")
        for problem in filter(None, problems):
            raise ConfigError(problem)

    def __call__(self, batch: dict) -> dict:
        rows = batch_rows(batch)
        images = {i: self.decode_row(row) for i, row in enumerate(rows)}
        found = self.faces_of({i: image for i, image in images.items() if image is not None}, rows)
        out = []
        for i, row in enumerate(rows):
            faces, landmarker = found.get(i, ([], ""))
            out.extend(self.output_rows(row, faces, landmarker))
        return rows_batch(out)

    def decode_row(self, row: dict) -> np.ndarray | None:
        """The row's image; None when it has none or it cannot be read (the row says why)."""
        if row["status"]:
            return None
        try:
            return self.decode(row)
        except Exception as err:  # noqa: BLE001 - one bad image must not end the job
            self.fail(row, err)
        return None

    def faces_of(self, images: dict[int, np.ndarray], rows: list[dict]) -> dict[int, tuple[list[Face], str]]:
        """Faces of every decoded image, batched; if the batch fails, image by image, so
        the one bad image gets the error and the others their faces."""
        found, todo = {}, []
        for i, image in images.items():
            if not self.use_annotation(rows[i]):
                todo.append(i)
                continue
            try:
                found[i] = ([self.face_from_annotation(image, rows[i]["hint_landmarks"])], "annotation")
            except Exception as err:  # noqa: BLE001 - one bad row must not end the job
                self.fail(rows[i], err)
        try:
            for i, faces in zip(todo, self.extractor.extract_many([images[i] for i in todo])):
                found[i] = (faces, self.cfg.face.landmarker)
            return found
        except Exception:  # noqa: BLE001 - retried one by one below
            pass
        for i in todo:
            try:
                found[i] = (self.extractor.extract(images[i]), self.cfg.face.landmarker)
            except Exception as err:  # noqa: BLE001
                self.fail(rows[i], err)
        return found

    def use_annotation(self, row: dict) -> bool:
        hint = row.get("hint_landmarks")
        return self.detector == "none" and hint is not None and bool(np.isfinite(hint).all())

    @staticmethod
    def fail(row: dict, err: Exception) -> None:
        if isinstance(err, ImageError):
            row["status"], row["error"] = err.status, str(err)
        else:
            row["status"], row["error"] = "face_error", f"{type(err).__name__}: {err}"[:500]

    def decode(self, row: dict) -> np.ndarray:
        if row["encoding"] == FER_PIXELS:
            return pixels_to_image(row["data"].decode("ascii", "replace"))  # grey; the extractor takes it
        return decode_image(row["data"], "rgb", self.cfg.face.max_pixels)

    def face_from_annotation(self, image: np.ndarray, hint: np.ndarray) -> Face:
        """Dataset-provided landmarks (AffectNet's _lnd.npy) instead of predicted ones."""
        boxes, _ = full_image_box(image)
        points = hint.reshape(-1, 2)
        face, crop_points = align_face(image, points, self.cfg.face, crop="box", box=boxes[0])
        return Face(face, boxes[0], crop_points, 1.0)

    def output_rows(self, row: dict, faces: list[Face], landmarker: str) -> list[dict]:
        if not row["status"]:
            row["status"], row["error"] = ("ok", "") if faces else ("no_face", "no face found")
        if not faces:
            return [self.row_for(row, None, 0, landmarker, len(faces))]
        return [self.row_for(row, face, i, landmarker, len(faces)) for i, face in enumerate(faces)]

    def row_for(self, row: dict, face: Face | None, index: int, landmarker: str, n_faces: int) -> dict:
        crop = self.blank if face is None else face.face.reshape(self.blank.shape)
        return {
            "sample_id": sample_id(row["dataset"], row["source_uri"], index),
            "dataset": row["dataset"], "source_uri": row["source_uri"],
            "subject": row["subject"], "split": row["split"],
            "label": np.int16(row["label"]), "label_name": labels.label_name(int(row["label"])),
            "valence": np.float32(row["valence"]), "arousal": np.float32(row["arousal"]),
            "face_index": np.int16(index), "face": crop,
            "bbox": np.zeros(4, np.float32) if face is None else np.asarray(face.bbox, np.float32),
            "landmarks": np.zeros(136, np.float32) if face is None else np.asarray(face.landmarks, np.float32).reshape(136),
            "det_score": np.float32(0 if face is None else face.det_score),
            "detector": self.detector, "landmarker": landmarker,
            "frame_index": np.int32(-1), "timestamp_s": np.float32(np.nan),
            "status": row["status"], "error": row["error"], "n_faces": np.int32(n_faces),
            "is_face": face is not None, "is_manifest": index == 0,
        }
