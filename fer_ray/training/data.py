"""Training data: preprocess/synthesis shards -> Ray Data datasets of model-ready arrays.

Image families read faces/ (mixed/ for the 42 mixed classes), clip families (cnn_lstm,
c3d) read clips/ (one row per clip of a video dataset, schema.CLIPS). Before any training
starts, `scan` reads only the small columns (split, label, face or frame shape) to check
that the output holds what the family eats, that every requested split has rows, that
the faces fit the family's input, and to count classes (for class weights). Pixel bytes
are decoded on the cluster.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from fer_ray import results, storage
from fer_ray.config import ConfigError, TrainConfig, clip_models, image_models, model_spec
from fer_ray.face68 import N_POINTS, N_VALUES
from fer_ray.labels import CANONICAL, LABEL_SETS
from fer_ray.runtime import LIGHT_CPUS

MIXED_SET = "mixed42"
CLIPS = "clips"
# What each training folder holds, for the error that names what the data has instead.
FOLDERS = {"faces": "aligned face images", "mixed": "fused mixed-emotion faces", CLIPS: "video clips"}


def label_lookup(label_set: str) -> np.ndarray:
    """Canonical index (0-7) -> index in `label_set`, -1 where the set has no such class."""
    names = LABEL_SETS[label_set]
    return np.array([names.index(name) if name in names else -1 for name in CANONICAL], dtype=np.int64)


def label_column(label_set: str) -> str:
    """mixed/ shards carry the 0-41 pair index; faces/ shards the canonical label."""
    return "mixed_label" if label_set == MIXED_SET else "label"


def data_folder(cfg: TrainConfig) -> str:
    """The folder a family trains on: clips/ for clip families, else faces/ (mixed/ for 42 classes)."""
    if model_spec(cfg.model).needs_clips:
        return CLIPS
    return "mixed" if cfg.resolved_label_set() == MIXED_SET else "faces"


def shard_files(cfg: TrainConfig) -> list[str]:
    """The committed shard files of every data URI in the family's folder (data_folder).
    An output without a commit (a run still going, or killed) is refused, never read."""
    folder = data_folder(cfg)
    files = []
    for uri in cfg.data_uris:
        problem = storage.check_readable(uri)
        if problem:
            raise ConfigError(f"data: {problem}")
        commit = results.committed(uri, "data")
        check_holds(cfg, uri, commit, folder)
        files += commit.uris(folder)
    if len({storage.is_s3(uri) for uri in files}) > 1:
        raise ConfigError("data: all data URIs must be on one store (all s3:// or all local)")
    return files


def check_holds(cfg: TrainConfig, uri: str, commit: results.Commit, folder: str) -> None:
    """A clip family given image shards, or an image family given clips only, is told
    (before any training) what it needs, what the output holds, and what to do."""
    if folder in commit.files:
        return
    held = ", ".join(f"{name}/ ({what})" for name, what in FOLDERS.items() if name in commit.files)
    if folder == CLIPS:
        advice = (f"preprocess a video layout (baum2, video_folder) to get clips/, or train an image family "
                  f"({', '.join(image_models())})")
    else:
        advice = f"train a clip family ({', '.join(clip_models())}) on clips/, or preprocess an image layout"
    raise ConfigError(f"data: model {cfg.model!r} takes {folder}/ ({FOLDERS[folder]}), but the "
                      f"{commit.job} result at {uri} holds {held or 'no training shards'}; {advice}")


@dataclasses.dataclass
class DataInfo:
    """What the checks found: files, per-split class counts, face (or frame) shape and, for
    clips/, the clip length T (0 for single faces)."""
    files: list[str]
    class_names: tuple[str, ...]
    counts: dict[str, list[int]]  # split -> samples per class (in the label set)
    face_shape: tuple[int, int, int]
    clip_length: int = 0
    # subject -> split of one subject fold (fer_ray.training.folds); None = the shards' own split
    subject_splits: dict[str, str] | None = None

    @property
    def is_clips(self) -> bool:
        return self.clip_length > 0

    def class_weights(self, split: str) -> list[float]:
        """Inverse frequency, normalised so a balanced set has every weight 1; unseen classes 0."""
        counts = np.asarray(self.counts[split], dtype=np.float64)
        seen = counts > 0
        weights = np.zeros_like(counts)
        weights[seen] = counts[seen].sum() / (seen.sum() * counts[seen])
        return weights.tolist()


def scan(cfg: TrainConfig, subject_splits: dict[str, str] | None = None) -> DataInfo:
    """Check the data against the config, reading only labels, splits and one face shape.
    subject_splits: a subject fold's split of the subjects, in place of the shards' own."""
    label_set = cfg.resolved_label_set()
    files = shard_files(cfg)
    try:
        table = results.arrow_dataset(files).to_table(columns=["split", "subject", label_column(label_set)])
    except (pa.ArrowInvalid, OSError, ValueError) as err:
        raise ConfigError(f"data: {cfg.data} holds no readable {label_column(label_set)!r} shards: {err}") from None
    if subject_splits is not None:
        table = table.set_column(0, "split", pa.array(fold_split_column(table["subject"], subject_splits)))
    class_names = LABEL_SETS[label_set]
    counts = {split: _class_counts(table, split, label_set) for split in _splits(cfg)}
    for split, per_class in counts.items():
        if sum(per_class) == 0:
            raise ConfigError(f"data: no rows with a {label_set} label in split {split!r} of "
                              f"{cfg.data} (splits present: {_present(table)}); choose a split it holds, "
                              f"or preprocess again with a share for {split!r}")
    if data_folder(cfg) == CLIPS:
        clip_length, face_shape = clip_shape(files, cfg.data)
        info = DataInfo(files, class_names, counts, face_shape, clip_length)
    else:
        info = DataInfo(files, class_names, counts, _first_face_shape(files))
    info.subject_splits = subject_splits
    check_input(cfg, info)
    return info


def fold_split_column(subjects: pa.ChunkedArray, subject_splits: dict[str, str]) -> list[str]:
    """Each row's split in a subject fold ('' for rows of subjects outside it)."""
    return [subject_splits.get(subject, "") for subject in subjects.to_pylist()]


def subjects(cfg: TrainConfig) -> list[str]:
    """The distinct subjects of the shards the family trains on (none for layouts without them)."""
    column = results.arrow_dataset(shard_files(cfg)).to_table(columns=["subject"])["subject"]
    return sorted(subject for subject in pc.unique(column).to_pylist() if subject)


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


def clip_shape(files: list[str], data: str) -> tuple[int, tuple[int, int, int]]:
    """(T, (h, w, c)) of the clips: one shape for all (a batch stacks them), read from the
    small frame_shape column of every row."""
    column = results.arrow_dataset(files).to_table(columns=["frame_shape"])["frame_shape"].combine_chunks()
    shapes = np.unique(column.flatten().to_numpy().reshape(-1, 4), axis=0)
    if len(shapes) != 1:
        listed = [tuple(int(v) for v in shape) for shape in shapes[:4]]
        raise ConfigError(f"data: the clips in {data} have {len(shapes)} shapes (T, h, w, c): {listed}; "
                          f"preprocess them with one clip_length and size")
    frames, height, width, channels = (int(v) for v in shapes[0])
    return frames, (height, width, channels)


def check_input(cfg: TrainConfig, info: DataInfo) -> None:
    """The faces (or each frame of the clips) must be what the family eats: side and
    channels (landmark-only: anything); clips must have the length the config asks for
    and the family can take."""
    spec = model_spec(cfg.model)
    if not spec.input_size:
        return
    height, width, channels = info.face_shape
    what = "frames of the clips" if info.is_clips else "faces"
    if (height, width, channels) != (spec.input_size, spec.input_size, spec.channels):
        colour = "rgb" if spec.channels == 3 else "gray"
        raise ConfigError(
            f"data: {what} in {cfg.data} are {height}x{width}x{channels}, but model "
            f"{cfg.model!r} expects {spec.input_size}x{spec.input_size}x{spec.channels}; preprocess "
            f"with --size {spec.input_size} --color {colour}, or pick a family for these {what}")
    if info.is_clips:
        check_clip_length(cfg, info.clip_length, spec)


def check_clip_length(cfg: TrainConfig, frames: int, spec) -> None:
    if cfg.clip_length and cfg.clip_length != frames:
        raise ConfigError(f"clip_length: {cfg.clip_length}, but the clips in {cfg.data} have {frames} frames; "
                          f"set clip_length 0 (the data's) or preprocess with clip_length {cfg.clip_length}")
    if frames < spec.min_clip_length:
        raise ConfigError(f"data: the clips in {cfg.data} have {frames} frames, but model {cfg.model!r} needs at "
                          f"least {spec.min_clip_length}; preprocess with a longer clip_length")


def to_label_set(labels: np.ndarray, label_set: str) -> np.ndarray:
    """Labels as stored -> indices in the label set, -1 for rows the set does not cover."""
    if label_set == MIXED_SET:
        return np.where((labels >= 0) & (labels < len(LABEL_SETS[MIXED_SET])), labels, -1)
    lookup = label_lookup(label_set)
    valid = (labels >= 0) & (labels < len(CANONICAL))
    return np.where(valid, lookup[np.clip(labels, 0, len(CANONICAL) - 1)], -1)


def _pixels(column, shape: tuple[int, ...]) -> np.ndarray:
    """Raw uint8 byte rows -> one array (rows, *shape)."""
    arrays = [np.frombuffer(value, dtype=np.uint8) for value in column]
    return np.stack(arrays).reshape(-1, *shape) if arrays else np.zeros((0, *shape), np.uint8)


def to_arrays(batch: dict, label_set: str) -> dict:
    """Parquet rows -> 'image' uint8 (B, C, H, W), 'landmarks' float32 (B, 68, 2), 'label' int64.

    Rows whose label is not in the label set are dropped here (e.g. contempt for basic7).
    Images stay uint8 so batches cross the object store at a quarter of the float size.
    """
    labels = to_label_set(batch[label_column(label_set)].astype(np.int64), label_set)
    keep = labels >= 0
    shape = tuple(int(v) for v in batch["face_shape"][0]) if len(labels) else (0, 0, 1)
    images = _pixels(batch["face"][keep], shape)
    landmarks = np.stack(batch["landmarks"][keep]) if keep.any() else np.zeros((0, N_VALUES))
    return {
        "image": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        "landmarks": landmarks.astype(np.float32).reshape(-1, N_POINTS, 2),
        "label": labels[keep],
    }


def clip_arrays(batch: dict, label_set: str) -> dict:
    """clips/ rows -> 'clip' uint8 (B, T, C, H, W) and 'label' int64; rows outside the label
    set are dropped, as for faces.

    Frames where the tracked face was lost (valid False) stay in, as the blank crops the
    ingest wrote: every clip keeps its T frames at their times, which is what both families
    assume (the LSTM steps and C3D's temporal kernels are positions in time); filling them
    with a neighbour would invent a face, and a mask is an input neither family has. The
    blank frames count in the normalisation statistics like any frame, so training and
    evaluation standardise them the same way. Landmarks are not read: no clip family takes them.
    """
    labels = to_label_set(batch["label"].astype(np.int64), label_set)
    keep = labels >= 0
    return {"clip": clip_pixels(batch["frames"][keep], batch["frame_shape"][keep]), "label": labels[keep]}


def clip_pixels(frames, frame_shapes) -> np.ndarray:
    """clips/ frames (raw bytes, (T, h, w, c) each) -> uint8 (B, T, C, H, W)."""
    shape = tuple(int(v) for v in frame_shapes[0]) if len(frames) else (0, 0, 0, 1)
    return np.ascontiguousarray(_pixels(frames, shape).transpose(0, 1, 4, 2, 3))


def read_split(info: DataInfo, label_set: str, split: str) -> ray.data.Dataset:
    """The rows of one split as model-ready arrays (lazy; runs on the cluster)."""
    if info.is_clips:
        columns, convert = ["frames", "frame_shape", "split", "label"], clip_arrays
    else:
        columns, convert = ["face", "face_shape", "landmarks", "split", label_column(label_set)], to_arrays
    where = pc.field("split") == split
    if info.subject_splits is not None:  # a subject fold: the split is chosen by subject
        where = pc.field("subject").isin([s for s, assigned in info.subject_splits.items() if assigned == split])
    ds = results.read_dataset(info.files, columns, where=where)
    return ds.map_batches(convert, fn_args=(label_set,), batch_format="numpy", num_cpus=LIGHT_CPUS)


def pixel_key(batch: dict) -> str:
    return "clip" if "clip" in batch else "image"


def pixel_moments(batch: dict) -> dict:
    """Per-pixel count, sum and sum of squares of a batch's images, or of every frame of its
    clips (float64, flattened to C*H*W)."""
    pixels = batch[pixel_key(batch)]
    images = pixels.reshape(-1, int(np.prod(pixels.shape[-3:]))).astype(np.float64)
    return {"n": np.array([len(images)]),
            "sum": images.sum(axis=0).reshape(1, -1),
            "sumsq": np.square(images).sum(axis=0).reshape(1, -1)}


def normalisation(ds: ray.data.Dataset, face_shape: tuple[int, int, int], clip_length: int = 0) -> dict:
    """Per-pixel mean and std images (C, H, W) of a split (over every frame of clips), summed
    from per-batch partials.

    The driver only receives one small row per batch, never the images; a batch holds about
    1024 images or frames, so a float64 copy of it stays small.
    """
    height, width, channels = face_shape
    total, sums, squares = 0, 0.0, 0.0
    batch_size = max(1, 1024 // max(clip_length, 1))
    for part in ds.map_batches(pixel_moments, batch_format="numpy", batch_size=batch_size,
                               num_cpus=LIGHT_CPUS).iter_batches(
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
