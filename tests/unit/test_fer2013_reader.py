"""The FER2013 reader on a local CSV, without Ray: one input row per line after the header,
its line number in the source key, and a specific status for every malformed line."""
from __future__ import annotations

import pytest

from fer_ray import labels
from fer_ray.datasets.fer2013 import check_header, read_blocks

PIXELS = " ".join(str(i % 256) for i in range(2304))


def read(tmp_path, lines: list[str], limit: int = 0, block_rows: int = 4) -> list[dict]:
    path = tmp_path / "fer2013.csv"
    path.write_bytes("\n".join(["emotion,pixels,Usage", *lines]).encode("utf-8") + b"\n")
    return [row for table in read_blocks(str(path), limit, block_rows) for row in table.to_pylist()]


def test_every_line_is_one_row_with_its_line_number_and_status(tmp_path):
    lines = [f"3,{PIXELS},Training", f"0,{PIXELS},PublicTest\r", "", f"9,{PIXELS},Training",
             f"x,{PIXELS},PrivateTest", f"1,{PIXELS}", f"2,{PIXELS},Training,extra",
             f'4,"{PIXELS}",PrivateTest', f"5,{PIXELS},Nope", "   "]
    rows = read(tmp_path, lines)
    assert [int(r["source_uri"].rsplit("=", 1)[1]) for r in rows] == list(range(2, 2 + len(lines)))
    assert [(r["status"], r["split"]) for r in rows] == [
        ("", "train"), ("", "val"), ("bad_row", ""), ("bad_label", "train"), ("bad_label", "test"),
        ("bad_row", ""), ("bad_row", ""), ("", "test"), ("bad_label", ""), ("bad_row", "")]
    errors = [r["error"] for r in rows]
    assert errors[2] == "expected 3 fields (emotion, pixels, Usage), got 0" and errors[9].endswith("got 1")
    assert "'9'" in errors[3] and "'x'" in errors[4] and "got 2" in errors[5] and "got 4" in errors[6]
    assert "'Nope'" in errors[8]
    assert rows[0]["label"] == labels.CANONICAL_INDEX["happy"] and rows[3]["label"] == labels.UNKNOWN
    # the pixels reach the face stage as the cell's bytes, unquoted and without the line end
    assert rows[0]["data"] == rows[1]["data"] == rows[7]["data"] == PIXELS.encode()
    assert {r["encoding"] for r in rows} == {"fer_pixels"} and {r["dataset"] for r in rows} == {"fer2013"}


def test_blocks_have_the_asked_size_and_limit_counts_lines(tmp_path):
    lines = [f"{i % 7},{PIXELS},Training" for i in range(10)]
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(["emotion,pixels,Usage", *lines]))  # no newline after the last line
    assert [t.num_rows for t in read_blocks(str(path), 0, 4)] == [4, 4, 2]
    assert [t.num_rows for t in read_blocks(str(path), 5, 4)] == [4, 1]
    assert len(read(tmp_path, lines, limit=3)) == 3


def test_a_spreadsheet_export_with_a_byte_order_mark_is_a_fer2013_csv(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_bytes(b"\xef\xbb\xbfemotion,pixels,Usage\r\n" + f"3,{PIXELS},Training\r\n".encode())
    check_header(str(path))
    assert [r["status"] for t in read_blocks(str(path), 0, 4) for r in t.to_pylist()] == [""]


def test_a_csv_with_other_columns_is_refused_naming_its_header(tmp_path):
    path = tmp_path / "other.csv"
    path.write_bytes(b"label,image\n3,x.png\n")
    expected = r"not a FER2013 CSV: header is \['label', 'image'\], expected emotion,pixels,Usage"
    with pytest.raises(ValueError, match=expected):
        check_header(str(path))
