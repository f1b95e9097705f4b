"""Training data: preprocess/synthesis shards -> Ray Data datasets of model-ready arrays.

Before any training starts, `scan` reads only the small columns (split, label, face
shape) to check that every requested split has rows, that the faces fit the family's
input, and to count classes (for class weights). Face bytes are decoded on the cluster.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data
from ray.data.expressions import col

from fer_ray import results, storage
from fer_ray.config import ConfigError, TrainConfig, model_spec
from fer_ray.face68 import N_POINTS, N_VALUES
from fer_ray.labels import CANONICAL, LABEL_SETS

MIXED_SET = "mixed42"


def label_lookup(label_set: str) -> np.ndarray:
    """Canonical index (0-7) -> index in `label_set`, -1 where the set has no such class."""
    names = LABEL_SETS[label_set]
    return np.array([names.index(name) if name in names else -1 for name in CANONICAL], dtype=np.int64)


def label_column(label_set: str) -> str:
    """mixed/ shards carry the 0-41 pair index; faces/ shards the canonical label."""
    return "mixed_label" if label_set == MIXED_SET else "label"


def shard_files(cfg: TrainConfig) -> list[str]:
    """The committed shard files of every data URI: its faces/ (mixed/ for 42 classes).
    An output without a commit (a run still going, or killed) is refused, never read."""
    folder = "mixed" if cfg.resolved_label_set() == MIXED_SET else "faces"
    files = []
    for uri in cfg.data_uris:
        problem = storage.check_readable(uri)
        if problem:
            raise ConfigError(f"data: {problem}")
        files += results.committed(uri, "data", folder=folder).uris(folder)
    if len({storage.is_s3(uri) for uri in files}) > 1:
        raise ConfigError("data: all data URIs must be on one store (all s3:// or all local)")
    return files


@dataclasses.dataclass
class DataInfo:
    """What the checks found: files, per-split class counts, face shape."""
    files: list[str]
    class_names: tuple[str, ...]
    counts: dict[str, list[int]]  # split -> samples per class (in the label set)
    face_shape: tuple[int, int, int]

    def class_weights(self, split: str) -> list[float]:
        """Inverse frequency, normalised so a balanced set has every weight 1; unseen classes 0."""
        counts = np.asarray(self.counts[split], dtype=np.float64)
        seen = counts > 0
        weights = np.zeros_like(counts)
        weights[seen] = counts[seen].sum() / (seen.sum() * counts[seen])
        return weights.tolist()


def scan(cfg: TrainConfig) -> DataInfo:
    """Check the data against the config, reading only labels, splits and one face shape."""
    label_set = cfg.resolved_label_set()
    files = shard_files(cfg)
    try:
        table = results.arrow_dataset(files).to_table(columns=["split", label_column(label_set)])
    except (pa.ArrowInvalid, OSError, ValueError) as err:
        raise ConfigError(f"data: {cfg.data} holds no readable {label_column(label_set)!r} shards: {err}") from None
    class_names = LABEL_SETS[label_set]
    counts = {split: _class_counts(table, split, label_set) for split in _splits(cfg)}
    for split, per_class in counts.items():
        if sum(per_class) == 0:
            raise ConfigError(f"data: no rows with a {label_set} label in split {split!r} of "
                              f"{cfg.data} (splits present: {_present(table)})")
    info = DataInfo(files, class_names, counts, _first_face_shape(files))
    check_input(cfg, info)
    return info


def _splits(cfg: TrainConfig) -> list[str]:
    return list(dict.fromkeys([cfg.train_split, cfg.val_split, cfg.test_split]))


def _present(table: pa.Table) -> str:
    return ", ".join(sorted(pc.unique(table["split"]).to_pylist())) or "none"


def _class_counts(table: pa.Table, split: str, label_set: str) -> list[int]:
    labels = table.filter(pc.equal(table["split"], split))[label_column(label_set)].to_numpy()
    mapped = to_label_set(labels.astype(np.int64), label_set)
    return np.bincount(mapped[mapped >= 0], minlength=len(LABEL_SETS[label_set])).tolist()


def _first_face_shape(files: list[str]) -> tuple[int, int, int]:
    for batch in results.arrow_dataset(files).to_batches(columns=["face_shape"], batch_size=1):
        if batch.num_rows:
            return tuple(int(v) for v in batch.column(0)[0].as_py())
    return (0, 0, 0)


def check_input(cfg: TrainConfig, info: DataInfo) -> None:
    """The faces must be what the family eats: side and channels (landmark-only: anything)."""
    spec = model_spec(cfg.model)
    if not spec.input_size:
        return
    height, width, channels = info.face_shape
    if (height, width, channels) != (spec.input_size, spec.input_size, spec.channels):
        colour = "rgb" if spec.channels == 3 else "gray"
        raise ConfigError(
            f"data: faces in {cfg.data} are {height}x{width}x{channels}, but model "
            f"{cfg.model!r} expects {spec.input_size}x{spec.input_size}x{spec.channels}; preprocess "
            f"with --size {spec.input_size} --color {colour}, or pick a family for these faces")


def to_label_set(labels: np.ndarray, label_set: str) -> np.ndarray:
    """Labels as stored -> indices in the label set, -1 for rows the set does not cover."""
    if label_set == MIXED_SET:
        return np.where((labels >= 0) & (labels < len(LABEL_SETS[MIXED_SET])), labels, -1)
    lookup = label_lookup(label_set)
    valid = (labels >= 0) & (labels < len(CANONICAL))
    return np.where(valid, lookup[np.clip(labels, 0, len(CANONICAL) - 1)], -1)


def to_arrays(batch: dict, label_set: str) -> dict:
    """Parquet rows -> 'image' uint8 (B, C, H, W), 'landmarks' float32 (B, 68, 2), 'label' int64.

    Rows whose label is not in the label set are dropped here (e.g. contempt for basic7).
    Images stay uint8 so batches cross the object store at a quarter of the float size.
    """
    labels = to_label_set(batch[label_column(label_set)].astype(np.int64), label_set)
    keep = labels >= 0
    shape = tuple(int(v) for v in batch["face_shape"][0]) if len(labels) else (0, 0, 1)
    faces = [np.frombuffer(face, dtype=np.uint8) for face in batch["face"][keep]]
    images = np.stack(faces).reshape(-1, *shape) if faces else np.zeros((0, *shape), np.uint8)
    landmarks = np.stack(batch["landmarks"][keep]) if keep.any() else np.zeros((0, N_VALUES))
    return {
        "image": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        "landmarks": landmarks.astype(np.float32).reshape(-1, N_POINTS, 2),
        "label": labels[keep],
    }


def read_split(info: DataInfo, label_set: str, split: str) -> ray.data.Dataset:
    """The rows of one split as model-ready arrays (lazy; runs on the cluster)."""
    fs, _ = storage.resolve(info.files[0])
    columns = ["face", "face_shape", "landmarks", "split", label_column(label_set)]
    ds = ray.data.read_parquet([storage.resolve(f)[1] for f in info.files], filesystem=fs).select_columns(columns)
    ds = ds.filter(expr=col("split") == split)
    return ds.map_batches(to_arrays, fn_args=(label_set,), batch_format="numpy")


def pixel_moments(batch: dict) -> dict:
    """Per-pixel count, sum and sum of squares of a batch's images (float64, flattened)."""
    images = batch["image"].astype(np.float64)
    return {"n": np.array([len(images)]),
            "sum": images.sum(axis=0).reshape(1, -1),
            "sumsq": np.square(images).sum(axis=0).reshape(1, -1)}


def normalisation(ds: ray.data.Dataset, face_shape: tuple[int, int, int]) -> dict:
    """Per-pixel mean and std images (C, H, W) of a split, summed from per-batch partials.

    The driver only receives one small row per batch, never the images.
    """
    height, width, channels = face_shape
    total, sums, squares = 0, 0.0, 0.0
    for part in ds.map_batches(pixel_moments, batch_format="numpy", batch_size=1024).iter_batches(
            batch_format="numpy", batch_size=None):
        total += int(part["n"].sum())
        sums = sums + part["sum"].sum(axis=0)
        squares = squares + part["sumsq"].sum(axis=0)
    mean = sums / total
    std = np.sqrt(np.maximum(squares / total - mean ** 2, 0.0))
    std = np.maximum(std, 1.0)  # a constant pixel (e.g. a border) must not blow up to inf
    shape = (channels, height, width)
    return {"mean": mean.reshape(shape).astype(np.float32).tolist(),
            "std": std.reshape(shape).astype(np.float32).tolist()}


def face_settings(cfg: TrainConfig) -> dict:
    """The `face` section of the first data URI's run configuration ({} if it has none)."""
    written = results.committed(cfg.data_uris[0], "data").config()
    return written.get("face", {}) if isinstance(written, dict) else {}
