"""Every row shape, in one place: the Parquet schemas of the outputs, and the rows the
readers and stages pass along (INPUT_ROWS, FACE_ROWS, MIXED_ROWS); `row(shape, ...)` makes
one with every column it is not given at its default.

Outputs use plain Arrow types only (no Ray tensor extensions), so pyarrow, pandas
and DuckDB read them without Ray. Faces are raw uint8 bytes in row-major
(height, width, channels) order with the shape in `face_shape`; `face_array` decodes.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Iterable

import numpy as np
import pyarrow as pa

from fer_ray.face68 import N_POINTS, N_VALUES

FACES = pa.schema([
    ("sample_id", pa.string()),          # stable hash of dataset + source key + face index
    ("dataset", pa.string()),
    ("source_uri", pa.string()),         # where the input came from (row suffix for CSV rows)
    ("subject", pa.string()),            # '' where the layout has no subject
    ("split", pa.string()),              # train | val | test
    ("label", pa.int16()),               # canonical 8-class index, -1 unknown
    ("label_name", pa.string()),
    ("valence", pa.float32()),           # NaN where the dataset has none
    ("arousal", pa.float32()),
    ("face_index", pa.int16()),          # 0 = largest face of the input
    ("face", pa.binary()),               # aligned crop, uint8, row-major (h, w, c)
    ("face_shape", pa.list_(pa.int32(), 3)),
    ("bbox", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 in source pixels
    ("landmarks", pa.list_(pa.float32(), N_VALUES)),  # x0, y0, x1, y1, ... crop pixels
    ("det_score", pa.float32()),
    ("detector", pa.string()),
    ("landmarker", pa.string()),
    ("frame_index", pa.int32()),         # -1 for still images
    ("timestamp_s", pa.float32()),       # NaN for still images
])

MANIFEST = pa.schema([
    ("source_uri", pa.string()),
    ("dataset", pa.string()),
    ("status", pa.string()),             # a Status
    ("error", pa.string()),              # '' when ok
    ("n_faces", pa.int32()),
    ("label", pa.int16()),
    ("subject", pa.string()),
    ("split", pa.string()),
])

# What the readers emit, one row per input: its identity and label, its status ('' until
# something decides its fate), and its bytes once fetched; `encoding` says what the bytes are.
ENCODED_IMAGE, FER_PIXELS = "image", "fer_pixels"
INPUT_ROWS = pa.schema([
    ("source_uri", pa.string()),
    ("dataset", pa.string()),
    ("subject", pa.string()),
    ("split", pa.string()),
    ("label", pa.int16()),               # canonical 8-class index, -1 unknown
    ("valence", pa.float32()),
    ("arousal", pa.float32()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("encoding", pa.string()),           # what `data` holds: an image file, or FER2013's pixel text
    ("data", pa.binary()),
    ("sidecar", pa.string()),            # where the layout's annotations are (AffectNet, CK+)
    ("hint_landmarks", pa.list_(pa.float32())),  # landmarks the dataset provides (AffectNet); [] if none
])

# What the face stage emits: every faces/ column plus the manifest's own, for one row per
# face found and one placeholder row per input without a face; is_face / is_manifest say
# which rows the writer puts in faces/ and which one carries the input's manifest row.
FACE_ROWS = pa.schema([
    *FACES,
    ("status", pa.string()), ("error", pa.string()), ("n_faces", pa.int32()),
    ("is_face", pa.bool_()), ("is_manifest", pa.bool_()),
])

class DescribedStatus(StrEnum):
    """A status and what it means (README documents every member; a test checks)."""
    description: str

    def __new__(cls, value: str, description: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member


class Status(DescribedStatus):
    """What became of one input (the manifest's `status`)."""
    OK = "ok", "one or more faces written"
    NO_FACE = "no_face", "decoded, but no face found (or none large enough)"
    EMPTY_FILE = "empty_file", "the file has zero bytes"
    DECODE_ERROR = "decode_error", "not a decodable image (corrupt, truncated or not an image)"
    TOO_LARGE = "too_large", "image header exceeds face.max_pixels; refused before decoding"
    BAD_ROW = "bad_row", "FER2013 line without exactly the three fields emotion, pixels, Usage"
    BAD_PIXELS = "bad_pixels", "FER2013 row whose pixels are not 2304 numbers in 0..255"
    BAD_LABEL = "bad_label", "label missing, not a number or out of range for the dataset's coding"
    UNKNOWN_CLASS = "unknown_class", "folder/class name not in the synonym table"
    MISSING_ANNOTATION = ("missing_annotation",
                          "an input without its annotation file (AffectNet's _exp.npy, BAUM-2's emotion/<clip>.txt)")
    READ_ERROR = "read_error", "the input could not be read from storage"
    FACE_ERROR = "face_error", "face detection, landmarks or alignment failed on this input"
    SKIPPED = "skipped", "listed but deliberately not used (CK+ frames between the first and the peak)"
    UNSUPPORTED_FORMAT = "unsupported_format", "a listed file that is not an image this job reads (by extension)"
    BAD_NAME = "bad_name", "a file name that is not valid UTF-8 (shown with \\x escapes); rename it to include it"
    DANGLING_LINK = "dangling_link", "a symbolic link to nothing"
    NOT_FOLLOWED = ("not_followed",
                    "a link to a directory: links to directories are not followed (no loops, no file twice)")
    NOT_A_FILE = "not_a_file", "a pipe, socket or device, or a name whose metadata cannot be read"
    NO_VIDEOS = "no_videos", "a BAUM-2 subject folder without an avi/ folder of clips (the row names the folder)"
    TOO_FEW_VALID = ("too_few_valid",
                     "the followed face was found on fewer than min_valid_fraction of the clip's frames: no clips/ row")
    EMPTY_WINDOW = "empty_window", "the clip window (clip_start_s, clip_end_s) holds no frame of this video"


# `mixed/`: fused faces. The faces/ columns keep their meaning for the fused face (face,
# landmarks of the fused face, subject, split inherited from the subject) except: label is
# -1 (a pair is not one canonical class), label_name is the pair ("anger+disgust"),
# source_uri is the primary parent's, landmarker is "fused:<method>", bbox is zeros.
MIXED = pa.schema([
    *FACES,
    ("primary", pa.int16()),             # canonical index of the upper-face expression
    ("secondary", pa.int16()),           # canonical index of the lower-face expression
    ("mixed_label", pa.int16()),         # 0-41: labels.mixed_index(primary name, secondary name)
    ("weights", pa.list_(pa.float32(), 2)),  # soft label: share of the primary and secondary faces
    ("method", pa.string()),             # region | weighted | pca
    ("parent_primary", pa.string()),     # sample_id of the faces/ row that gave the upper face
    ("parent_secondary", pa.string()),
])
FUSED_LANDMARKER = "fused:"  # prefix of a mixed row's landmarker: such a face is already mixed

# Synthesis `manifest/`: one row per input face, with what happened to it.
MIXED_MANIFEST = pa.schema([
    ("sample_id", pa.string()),
    ("source_uri", pa.string()),
    ("subject", pa.string()),
    ("split", pa.string()),
    ("label_name", pa.string()),
    ("status", pa.string()),             # a MixedStatus
    ("error", pa.string()),
    ("n_mixed", pa.int32()),             # fused faces this face is a parent of
])


class MixedStatus(DescribedStatus):
    """What became of one input face of synthesis (the synthesis manifest's `status`)."""
    USED = "used", "parent of one or more fused faces"
    NOT_PICKED = "not_picked", "a usable face the pick rule left out (pick=first or random)"
    NOT_BASIC = "not_basic", "label is not one of the 7 basic expressions (contempt or unknown)"
    NO_SUBJECT = "no_subject", "the face has no subject, so there is no second expression of the same person"
    LONE_EXPRESSION = "lone_expression", "its subject has fewer than two usable basic expressions"
    BAD_LANDMARKS = "bad_landmarks", "landmarks missing, not finite or degenerate: no alignment or seam possible"
    SIZE_MISMATCH = "size_mismatch", "face shape differs from the shape most of its subject's faces have"
    ALREADY_MIXED = "already_mixed", "the input face is itself a fused face"
    FUSION_ERROR = "fusion_error", "fusing one of its pairs failed (the error says which); other pairs kept"


class VideoStatus(DescribedStatus):
    """What became of one input of video labelling (its `videos/` row's `status`): labelled
    (ok, no_face), not a video file, or why a video or one time segment of it gave fewer
    frames than it holds (vision.video.VideoError's `status`). Names the listing refuses
    (dangling links, names that are not UTF-8, ...) keep their schema.Status."""
    OK = "ok", "labelled: faces found on its sampled frames, tracked and classified"
    NO_FACE = "no_face", "decoded and sampled, but no face found on any sampled frame"
    UNSUPPORTED = "unsupported", "a listed file without a video extension (mp4, mov, mkv, avi, webm, m4v, mpg, ts)"
    EMPTY_FILE = "empty_file", "the file has zero bytes"
    NOT_A_VIDEO = "not_a_video", "no container format recognised (random bytes, an MP4 cut before its index)"
    NO_VIDEO_STREAM = "no_video_stream", "a readable container without a video stream (audio only, cover art only)"
    UNKNOWN_CODEC = "unknown_codec", "the video stream's codec has no decoder in this FFmpeg build"
    TOO_LARGE = "too_large", "width x height over the pixel limit; refused before decoding"
    NO_FRAMES = "no_frames", "a video stream from which not one frame decodes"
    DECODE_ERROR = "decode_error", "decoding failed part-way (corrupt or truncated): frames before the failure are kept"


# `clips/`: one row per clip of a video dataset (issue 23): `clip_length` frames evenly spaced
# in time over the video (or a configured window), each aligned by the face stage with the
# image settings, the subject's face followed by the tracker (its largest track). A frame
# where that face was lost keeps a blank crop and `valid` False, never dropped, so every clip
# has exactly T frames. Frames are raw uint8 bytes, row-major (T, h, w, c), shape in
# `frame_shape`; `clip_array` decodes. Landmarks are T x 68 x 2 crop pixels (NaN where not valid).
CLIPS = pa.schema([
    ("clip_id", pa.string()),            # stable hash of dataset + source key (+ window)
    ("dataset", pa.string()),
    ("source_uri", pa.string()),
    ("subject", pa.string()),
    ("split", pa.string()),              # train | val | test, by subject
    ("label", pa.int16()),               # canonical 8-class index, -1 unknown
    ("label_name", pa.string()),
    ("clip_length", pa.int16()),         # T
    ("frames", pa.binary()),             # T aligned crops, uint8, row-major (T, h, w, c)
    ("frame_shape", pa.list_(pa.int32(), 4)),  # (T, h, w, c)
    ("landmarks", pa.list_(pa.float32())),     # T * 68 * 2, crop pixels, NaN where not valid
    ("timestamps_s", pa.list_(pa.float64())),  # presentation time of each frame
    ("frame_indices", pa.list_(pa.int32())),   # nominal index of each frame
    ("valid", pa.list_(pa.bool_())),     # the tracked face was found on that frame
    ("n_valid", pa.int16()),
    ("repeated", pa.bool_()),            # the video had fewer than T frames: frames repeat
    ("track_id", pa.int32()),            # the followed track within the video
    ("detector", pa.string()),
    ("landmarker", pa.string()),
    ("duration_s", pa.float64()),        # of the video, as probed
    ("fps", pa.float64()),               # the stream's average frame rate, as probed
])


# What the clip stage emits: every clips/ column plus the manifest's own, one row per input;
# is_clip says whether it also goes to clips/ (is_manifest is always True).
CLIP_ROWS = pa.schema([
    *CLIPS,
    ("status", pa.string()), ("error", pa.string()), ("n_faces", pa.int32()),
    ("is_clip", pa.bool_()), ("is_manifest", pa.bool_()),
])


def clip_array(frames: bytes, shape) -> np.ndarray:
    """A clip as a (T, h, w, c) uint8 array."""
    return np.frombuffer(frames, dtype=np.uint8).reshape(*(int(v) for v in shape))


# What the synthesis stage emits: every mixed/ column plus the manifest's own, for each fused
# face and each input face; is_mixed / is_manifest say which rows go to mixed/ and manifest/.
MIXED_ROWS = pa.schema([
    *MIXED,
    ("status", pa.string()), ("error", pa.string()), ("n_mixed", pa.int32()),
    ("skip_reason", pa.string()),        # why the face's subject made no pair ('' if it made one)
    ("is_mixed", pa.bool_()), ("is_manifest", pa.bool_()),
])

# Columns whose default is not their type's zero ('' / b'' / 0 / False / a list of zeros).
DEFAULTS = {"encoding": ENCODED_IMAGE, "label": -1, "primary": -1, "secondary": -1, "mixed_label": -1,
            "frame_index": -1, "valence": np.nan, "arousal": np.nan, "timestamp_s": np.nan, "hint_landmarks": (),
            "duration_s": np.nan, "fps": np.nan, "segment_index": -1, "track_id": -1, "local_track": -1,
            "probabilities": (), "smoothed": (), "mean_probabilities": (), "time_share": (), "classes": ()}


def row(table_schema: pa.Schema, **values) -> dict:
    """A row of `table_schema`: the given values, every other column at its default."""
    constant, fresh = _defaults(table_schema)
    unknown = values.keys() - constant.keys()
    if unknown:
        raise KeyError(f"not columns of this row shape: {', '.join(sorted(unknown))}")
    out = dict(constant)  # a listing of a million inputs makes a million rows: copy, not rebuild
    out.update({name: default(field) for name, field in fresh if name not in values})
    out.update(values)
    return out


def _defaults(table_schema: pa.Schema) -> tuple[dict, tuple[tuple[str, pa.Field], ...]]:
    """A schema's defaults, in column order: the immutable ones, and the fields whose default
    is a numpy array (made afresh for each row, since a row's array may be written in place).
    Cached by identity: hashing a pa.Schema costs as much as building the row."""
    cached = _DEFAULTS_CACHE.get(id(table_schema))
    if cached is None or cached[0] is not table_schema:
        if len(_DEFAULTS_CACHE) > 256:  # schemas made on the fly (never in a loop, but bounded anyway)
            _DEFAULTS_CACHE.clear()
        constant = {f.name: default(f) for f in table_schema}
        fresh = tuple((f.name, f) for f in table_schema if isinstance(constant[f.name], np.ndarray))
        cached = _DEFAULTS_CACHE[id(table_schema)] = (table_schema, constant, fresh)  # keeps the schema alive
    return cached[1], cached[2]


_DEFAULTS_CACHE: dict[int, tuple[pa.Schema, dict, tuple]] = {}


def default(field: pa.Field):
    """A column's value in a row that does not set it."""
    if field.name in DEFAULTS:
        return DEFAULTS[field.name]
    kind = field.type
    if pa.types.is_fixed_size_list(kind):
        return np.zeros(kind.list_size, kind.value_type.to_pandas_dtype())
    if pa.types.is_list(kind):
        return ()
    if pa.types.is_string(kind):
        return ""
    if pa.types.is_binary(kind):
        return b""
    return False if pa.types.is_boolean(kind) else kind.to_pandas_dtype()(0)


def table_from_rows(rows: list[dict], table_schema: pa.Schema) -> pa.Table:
    """Row dicts (with at least the schema's keys) as a plain-Arrow table of `table_schema`."""
    return pa.table({field.name: arrow_array([row[field.name] for row in rows], field.type)
                     for field in table_schema}, schema=table_schema)


ROWS_PER_CHUNK = 16384


def rows_table(rows: Iterable[dict], table_schema: pa.Schema, chunk_rows: int = ROWS_PER_CHUNK) -> pa.Table:
    """Rows, as they come, as one table of `table_schema`, converted a chunk at a time: with a
    generator of rows, no more than one chunk of row dicts is ever alive."""
    chunks, pending = [], []
    for one in rows:
        pending.append(one)
        if len(pending) == chunk_rows:
            chunks.append(table_from_rows(pending, table_schema))
            pending = []
    chunks.append(table_from_rows(pending, table_schema))
    return pa.concat_tables(chunks)


def arrow_array(values, kind: pa.DataType) -> pa.Array:
    """One column of `kind` from a list or numpy array; fixed-size lists from numpy vectors."""
    if pa.types.is_fixed_size_list(kind):
        flat = np.asarray(list(values), dtype=kind.value_type.to_pandas_dtype()).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, kind.value_type), kind.list_size)
    if pa.types.is_list(kind):  # numpy vectors of any length
        if not any(len(v) for v in values):  # the usual case (no hint landmarks): skip a numpy array per row
            return pa.ListArray.from_arrays(pa.array(np.zeros(len(values) + 1, np.int32)),
                                            pa.array([], kind.value_type), type=kind)
        return pa.array([np.asarray(v, kind.value_type.to_pandas_dtype()) for v in values], kind)
    return pa.array(list(values) if isinstance(values, np.ndarray) and values.dtype == object else values, kind)


def face_array(face: bytes, shape) -> np.ndarray:
    """The aligned face as a (h, w) grey or (h, w, 3) RGB uint8 array."""
    h, w, c = (int(v) for v in shape)
    image = np.frombuffer(face, dtype=np.uint8).reshape(h, w, c)
    return image[:, :, 0] if c == 1 else image


def landmarks_array(flat) -> np.ndarray:
    """Landmarks as a (68, 2) float32 array."""
    return np.asarray(flat, dtype=np.float32).reshape(N_POINTS, 2)


# ---------------------------------------------------------------- video labelling

def _float_list() -> pa.DataType:
    return pa.list_(pa.float32())  # one value per class of the checkpoint's label set (`classes`)


# `frames/`: one row per face on a sampled frame (each (video, timestamp, face) once).
VIDEO_FRAMES = pa.schema([
    ("video_uri", pa.string()),
    ("frame_index", pa.int32()),         # nominal index (exact for constant frame rate)
    ("timestamp_s", pa.float64()),       # the frame's presentation time
    ("track_id", pa.int32()),            # 0, 1, ... per video, in order of first appearance
    ("bbox", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 in pixels of the (rotated) frame
    ("landmarks", pa.list_(pa.float32(), N_VALUES)),  # x0, y0, ... in face-crop pixels
    ("det_score", pa.float32()),
    ("probabilities", _float_list()),    # the model's, per class
    ("smoothed", _float_list()),         # centred moving average over the track (smooth_s)
    ("label", pa.string()),              # top class of the smoothed probabilities
    ("confidence", pa.float32()),        # its smoothed probability
    ("segment_index", pa.int32()),       # the time segment that decoded the frame
])

# `tracks/`: one row per face track of a video.
VIDEO_TRACKS = pa.schema([
    ("video_uri", pa.string()),
    ("track_id", pa.int32()),
    ("n_frames", pa.int32()),
    ("first_s", pa.float64()),
    ("last_s", pa.float64()),
    ("face_time_s", pa.float64()),       # last_s - first_s
    ("dominant", pa.string()),           # top class of mean_probabilities
    ("mean_probabilities", _float_list()),  # smoothed, weighted by the time each frame stands for
    ("time_share", _float_list()),       # share of the track's time each class is on top
])

# `segments/`: label runs per track, usable as subtitles (also written as WebVTT per video).
VIDEO_RUNS = pa.schema([
    ("video_uri", pa.string()),
    ("track_id", pa.int32()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("label", pa.string()),
    ("confidence", pa.float32()),        # mean smoothed probability of `label` over the run
    ("n_frames", pa.int32()),
])

# `videos/`: one row per input, always (inputs = videos/ rows).
VIDEOS = pa.schema([
    ("video_uri", pa.string()),
    ("status", pa.string()),             # a VideoStatus (or a listing Status)
    ("error", pa.string()),              # '' when ok; where decoding stopped, for decode_error
    ("size", pa.int64()),                # bytes, as listed
    ("mtime_ns", pa.int64()),            # modification time, as listed (0 when the store has none)
    ("etag", pa.string()),               # the object's ETag ('' where the store has none: local files)
    ("codec", pa.string()),
    ("width", pa.int32()),               # as displayed (rotation applied)
    ("height", pa.int32()),
    ("duration_s", pa.float64()),        # NaN when unknown
    ("fps", pa.float64()),               # the stream's average frame rate; NaN when unknown
    ("n_segments", pa.int32()),
    ("frames_sampled", pa.int32()),
    ("n_faces", pa.int32()),             # frames/ rows of the video
    ("n_tracks", pa.int32()),
    ("dominant", pa.string()),           # '' without tracks
    ("face_time_s", pa.float64()),       # summed over tracks
    ("mean_probabilities", _float_list()),  # tracks' means weighted by face time
    ("classes", pa.list_(pa.string())),  # the class of each position of the probability lists
    ("webvtt", pa.string()),             # URI of the video's WebVTT file ('' if not decoded)
    ("annotated", pa.string()),          # URI of its annotated MP4 ('' if not asked for, or none written)
    ("annotate_error", pa.string()),     # why the annotated MP4 is missing or stops early ('' if fine)
    ("elapsed_s", pa.float64()),         # task seconds spent on the video (probe, segments, reduce)
    ("carried", pa.bool_()),             # taken unchanged from the committed run, not labelled again
])

# What label-videos lists on the driver, one row per listed name: status '' = to be probed;
# carried = the committed run labelled the same object with the same settings (its etag is
# the committed one, checked again by the probe); annotate: the video gets an annotated MP4
# (the first `annotate` videos of the listing).
VIDEO_INPUTS = pa.schema([("video_uri", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                          ("status", pa.string()), ("error", pa.string()), ("etag", pa.string()),
                          ("carried", pa.bool_()), ("annotate", pa.bool_())])

# Between the stages of label-videos: the rows of one video's segments. The probe emits one
# row per segment (segment_index >= 0) or one row for an input that is no video
# (segment_index -1, status set) or one row for a carried video (segment_index -1, carried:
# the reduce takes its committed rows); the segment stage keeps that row (frames_sampled, status,
# error, elapsed_s filled) and adds one row per face found (is_face), crops included. The
# best face (highest det_score) of each local track keeps its crop as a PNG `thumbnail`
# after the crops are dropped: the reduce shows one per video-wide track on the timeline.
VIDEO_WORK_ROWS = pa.schema([
    *[f for f in VIDEOS if f.name in ("video_uri", "status", "error", "size", "mtime_ns", "etag", "codec", "width",
                                      "height", "duration_s", "fps", "n_segments", "frames_sampled", "elapsed_s",
                                      "carried")],
    ("probe_s", pa.float64()),
    ("segment_index", pa.int32()),
    ("start_s", pa.float64()),           # the segment owns [start_s, end_s); end_s may be inf
    ("end_s", pa.float64()),
    ("is_face", pa.bool_()),
    ("timestamp_s", pa.float64()),
    ("frame_index", pa.int32()),
    ("bbox", pa.list_(pa.float32(), 4)),
    ("landmarks", pa.list_(pa.float32(), N_VALUES)),
    ("det_score", pa.float32()),
    ("owned", pa.bool_()),
    ("local_track", pa.int32()),
    ("face", pa.binary()),
    ("face_shape", pa.list_(pa.int32(), 3)),
    ("thumbnail", pa.binary()),          # PNG of the crop; b'' but on a local track's best face
    ("annotate", pa.bool_()),            # as in VIDEO_INPUTS, on every row of the video
])
# After classification: no pixels (the per-video reduce shuffles these), probabilities added.
VIDEO_LABEL_ROWS = pa.schema([
    *[f for f in VIDEO_WORK_ROWS if f.name not in ("face", "face_shape")],
    ("probabilities", _float_list()),
])
VIDEO_FOLDERS = {"frames": ("is_frame", VIDEO_FRAMES), "tracks": ("is_track", VIDEO_TRACKS),
                 "segments": ("is_run", VIDEO_RUNS), "videos": ("is_video", VIDEOS)}


def _union(*schemas: pa.Schema) -> list[pa.Field]:
    fields: dict[str, pa.Field] = {}
    for table_schema in schemas:
        for f in table_schema:
            if fields.setdefault(f.name, f).type != f.type:
                raise TypeError(f"column {f.name} has two types: {fields[f.name].type} and {f.type}")
    return list(fields.values())


# What the per-video reduce emits: every column of the four folders, and a flag per folder.
VIDEO_OUTPUT_ROWS = pa.schema([*_union(*(s for _, s in VIDEO_FOLDERS.values())),
                               *[(flag, pa.bool_()) for flag, _ in VIDEO_FOLDERS.values()]])


# Face pixels barely compress: a 224 px RGB face is 131 KiB at zstd's level 1 and at pyarrow's
# default level alike. Written with pyarrow's defaults it took 0.80 ms, without a dictionary
# for the bytes columns 0.64 ms, and at level 1 as well 0.39 ms.
PARQUET_COMPRESSION = {"compression": "zstd", "compression_level": 1}


def parquet_options(table: pa.Table) -> dict:
    """`pq.write_table`'s options for every Parquet file fer-ray writes: zstd at level 1, and a
    dictionary for every column but the bytes ones (pixels, thumbnails), whose values never
    repeat: pyarrow would hash each one into a dictionary it then gives up on."""
    binary = (pa.types.is_binary, pa.types.is_large_binary)
    return {**PARQUET_COMPRESSION,
            "use_dictionary": [f.name for f in table.schema if not any(kind(f.type) for kind in binary)]}
