"""Read a job's committed output into pandas (or Arrow), with pixels decoded into numpy arrays.

Every reader reads only the files the output's `_commit.json` lists (fer_ray.results): the
partial files of an interrupted or failed run beside it are never read, and an output
with no committed result raises ConfigError saying why. URIs are local paths, file:// or
s3:// (endpoint and credentials from the AWS variables, as for the jobs). No Ray needed.

Decoded columns (pandas; one numpy array per row):
- `face`: the aligned crop, (h, w) uint8 grey or (h, w, 3) RGB, from its bytes and `face_shape`;
- `landmarks`: (68, 2) float32 crop pixels (faces), (T, 68, 2) for clips (NaN where not valid);
- `frames`: a clip's (T, h, w) grey or (T, h, w, 3) RGB uint8 frames, from `frame_shape`.
With as_arrow=True these become Arrow fixed-shape tensor columns where every row has one shape
(an output of one run always has), and stay bytes otherwise.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fer_ray import config, schema, storage
from fer_ray.config import ConfigError
from fer_ray.face68 import N_POINTS

LABEL_TABLES = tuple(schema.VIDEO_FOLDERS)  # frames, tracks, segments, videos


def committed_table(uri: str, folders: tuple[str, ...], split: str | None = None,
                    columns: list[str] | None = None) -> pa.Table:
    """The first of `folders` that the committed result at `uri` has, as one Arrow table
    (plain pyarrow), only the rows of `split` if given and only `columns` if given."""
    from fer_ray import results  # imports Ray (its Datasource); kept out of `import fer_ray`

    if split is not None and split not in config.SPLITS:
        raise ConfigError(f"split: {config.show(split)} is not valid; choose one of: {', '.join(config.SPLITS)}")
    commit = results.committed(uri, "uri")
    folder = next((name for name in folders if name in commit.files), None)
    if folder is None:
        raise ConfigError(f"uri: the {commit.job} result at {uri} has no {' or '.join(folders)}/ files "
                          f"(it has: {', '.join(sorted(commit.files)) or 'none'})")
    files = commit.uris(folder)
    if not files:  # a run that wrote no rows there (no face found in any input, say)
        return empty_table(commit.job, folder, columns)
    dataset = results.arrow_dataset(files)
    check_columns(columns, dataset.schema.names)
    where = pc.field("split") == split if split is not None else None
    return dataset.to_table(columns=columns, filter=where)


def empty_table(job: str, folder: str, columns: list[str] | None) -> pa.Table:
    """No rows, with the folder's columns where its schema is known."""
    folder_schemas = {"faces": schema.FACES, "mixed": schema.MIXED, "clips": schema.CLIPS,
                      "manifest": schema.MIXED_MANIFEST if job == "synthesize" else schema.MANIFEST,
                      **{name: table_schema for name, (_, table_schema) in schema.VIDEO_FOLDERS.items()}}
    if folder not in folder_schemas:
        return pa.table({})
    check_columns(columns, folder_schemas[folder].names)
    table = folder_schemas[folder].empty_table()
    return table if columns is None else table.select(columns)


def check_columns(columns: list[str] | None, names: list[str]) -> None:
    unknown = [name for name in columns or () if name not in names]
    if unknown:
        raise ConfigError(f"columns: {config.show(unknown)} not in this output; valid columns: {', '.join(names)}")


def read_faces(uri: str, split: str | None = None, columns: list[str] | None = None, as_arrow: bool = False):
    """The faces of a preprocess output (faces/) or a synthesis output (mixed/) as a DataFrame.

    uri: the job's output (local path, file:// or s3://). split: "train", "val" or "test" to keep
    only its rows. columns: the columns to read (default all; README "Outputs" lists them).
    `face` becomes an (h, w) grey or (h, w, 3) RGB uint8 array per row and `landmarks` a (68, 2)
    float32 array, e.g. `fer_ray.read_faces("out/jaffe").face[0].shape` -> (64, 64).
    """
    return read_decoded(uri, ("faces", "mixed"), split, columns, as_arrow, FACE_DECODERS)


def read_clips(uri: str, split: str | None = None, columns: list[str] | None = None, as_arrow: bool = False):
    """The clips of a video-layout preprocess output (clips/) as a DataFrame.

    `frames` becomes a (T, h, w) grey or (T, h, w, 3) RGB uint8 array per row, `landmarks` a
    (T, 68, 2) float32 array (NaN on frames where the face was lost, `valid` False).
    """
    return read_decoded(uri, ("clips",), split, columns, as_arrow, CLIP_DECODERS)


def read_manifest(uri: str, as_arrow: bool = False):
    """One row per input of a job's output: its status and error text (README lists every
    status). A labelling output's per-input table is its videos/."""
    table = committed_table(uri, ("manifest", "videos"))
    return table if as_arrow else table.to_pandas()


def read_labels(uri: str, table: str = "tracks", as_arrow: bool = False):
    """One table of a label-videos output: frames (a row per face on a sampled frame, its
    `landmarks` as a (68, 2) float32 array), tracks (a row per face track), segments (a row
    per label run) or videos (a row per input)."""
    if table not in LABEL_TABLES:
        raise ConfigError(f"table: {config.show(table)} is not valid; choose one of: {', '.join(LABEL_TABLES)}")
    return read_decoded(uri, (table,), None, None, as_arrow, {"landmarks": FACE_DECODERS["landmarks"]})


def read_predictions(uri: str, as_arrow: bool = False):
    """The predictions of `fer-ray predict`: its one .parquet or .csv file, or the committed
    predictions/ shards of a directory output."""
    if uri.endswith(config.FILE_SUFFIXES["parquet"]):
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
    elif uri.endswith(config.FILE_SUFFIXES["csv"]):
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(pa.BufferReader(storage.read_bytes(uri)))
    else:
        table = committed_table(uri, ("predictions",))
    return table if as_arrow else table.to_pandas()


def face_pixels(face: bytes, shape) -> np.ndarray:
    return schema.face_array(face, shape)


def face_landmarks(flat, _shape=None) -> np.ndarray:
    return schema.landmarks_array(flat)


def clip_frames(frames: bytes, shape) -> np.ndarray:
    clip = schema.clip_array(frames, shape)
    return clip[..., 0] if clip.shape[-1] == 1 else clip


def clip_landmarks(flat, _shape=None) -> np.ndarray:
    return np.asarray(flat, dtype=np.float32).reshape(-1, N_POINTS, 2)


# {column: (the column holding its shape, or None; decode(value, shape) -> array)}
FACE_DECODERS = {"face": ("face_shape", face_pixels), "landmarks": (None, face_landmarks)}
CLIP_DECODERS = {"frames": ("frame_shape", clip_frames), "landmarks": (None, clip_landmarks)}


def read_decoded(uri: str, folders: tuple[str, ...], split: str | None, columns: list[str] | None,
                 as_arrow: bool, decoders: dict):
    """A committed folder with the `decoders`' columns decoded; a shape column that was read
    only to decode its column is left out."""
    wanted = columns
    if columns is not None:
        shapes = [shape for column, (shape, _) in decoders.items() if shape and column in columns]
        columns = list(dict.fromkeys([*columns, *shapes]))
    table = committed_table(uri, folders, split, columns)
    decoded = {column: decode_column(table, column, *decoders[column])
               for column in decoders if column in table.column_names}
    if wanted is not None:
        table = table.select([name for name in table.column_names if name in wanted])
    return as_arrow_table(table, decoded) if as_arrow else as_data_frame(table, decoded)


def decode_column(table: pa.Table, column: str, shape_column: str | None, decode_one) -> list[np.ndarray]:
    values = table.column(column).to_pylist()
    shapes = table.column(shape_column).to_pylist() if shape_column else [None] * len(values)
    return [decode_one(value, shape) for value, shape in zip(values, shapes)]


def as_data_frame(table: pa.Table, decoded: dict[str, list[np.ndarray]]):
    """pandas, the decoded columns in their places as one numpy array per row (the raw bytes
    are not converted: they are dropped before to_pandas)."""
    kept = [name for name in decoded if name in table.column_names]
    positions = {name: table.column_names.index(name) for name in kept}
    frame = table.drop_columns(kept).to_pandas()
    for name in sorted(kept, key=positions.get):
        cells = np.empty(len(frame), dtype=object)
        for row, array in enumerate(decoded[name]):  # one by one: numpy would stack arrays of one shape
            cells[row] = array
        frame.insert(positions[name], name, cells)
    return frame


def as_arrow_table(table: pa.Table, decoded: dict[str, list[np.ndarray]]) -> pa.Table:
    """Arrow: a decoded column whose rows share one shape becomes a fixed-shape tensor column;
    one with mixed shapes (or no rows) stays as stored."""
    for name, arrays in decoded.items():
        if name in table.column_names and arrays and len({a.shape for a in arrays}) == 1:
            tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(np.stack(arrays)))
            table = table.set_column(table.column_names.index(name), name, tensors)
    return table


def show_faces(faces, limit: int = 16, scale: int = 3, cols: int = 8):
    """The first `limit` faces of a read_faces DataFrame as one PIL image (a notebook shows
    it): each face upscaled `scale` times, its landmarks drawn, its label and split below."""
    from PIL import Image

    from fer_ray.vision.draw import contact_sheet

    rows = faces.head(limit)
    if not len(rows):
        raise ValueError("show_faces: no faces to show")
    points = rows["landmarks"] if "landmarks" in rows else [None] * len(rows)
    captions = [" ".join(str(row.get(name, "")) for name in ("label_name", "split")).strip()
                for _, row in rows.iterrows()]
    return Image.fromarray(contact_sheet(list(rows["face"]), list(points), captions, cols=cols, scale=scale))
