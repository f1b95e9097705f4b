"""How fer-ray's Parquet files are written (schema.parquet_options), without Ray: the bytes
columns (pixels, thumbnails) get no dictionary, the repeated ones keep theirs, and the file
reads back the same."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fer_ray.schema import parquet_options


def test_bytes_columns_get_no_dictionary_and_the_file_reads_back_the_same(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({
        "pixels": pa.array([rng.integers(0, 256, 2304, dtype=np.uint8).tobytes() for _ in range(200)], pa.binary()),
        "thumbnail": pa.array([rng.bytes(64) for _ in range(200)], pa.large_binary()),
        "label_name": pa.array(["happy", "sad"] * 100),
        "landmarks": pa.array([rng.random(136).tolist() for _ in range(200)], pa.list_(pa.float32())),
    })
    assert parquet_options(table)["use_dictionary"] == ["label_name", "landmarks"]
    path = tmp_path / "faces.parquet"
    pq.write_table(table, path, **parquet_options(table))
    columns = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema.split(".")[0]: set(columns.column(i).encodings)
                 for i in range(columns.num_columns)}
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert not encodings["pixels"] & dictionary and not encodings["thumbnail"] & dictionary
    assert encodings["label_name"] & dictionary
    assert columns.column(0).compression == "ZSTD"
    assert pq.read_table(path).equals(table)
