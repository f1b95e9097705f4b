"""Which listed videos a label-videos run carries over from the committed run (no Ray): only
those the committed run of the same job and settings labelled as they are now."""
from __future__ import annotations

import json

import pyarrow as pa

from fer_ray import results, schema, storage
from fer_ray.pipelines import runs
from fer_ray.pipelines.label_videos import JOB, carry_over, input_row
from fer_ray.storage import Listed

SETTINGS = {"fps": 5.0, "segment_s": 2.0, "face": {"size": 64}}


def committed_output(tmp_path, videos: list[dict], settings: dict = SETTINGS, job: str = JOB) -> str:
    """An output whose commit is a `job` run with these settings and these videos/ rows."""
    output = str(tmp_path / "out")
    table = schema.table_from_rows([schema.row(schema.VIDEOS, **v) for v in videos], schema.VIDEOS)
    commit = results.commit_tables(output, job, {"videos": [table], "frames": [pa.table({"video_uri": ["x"]})]})
    identity = {"job": job, "settings": settings, "input": "an earlier listing"}
    storage.write_bytes(commit.run_uri(runs.RUN_FILE), json.dumps(identity).encode())
    return output


def listing() -> list[dict]:
    return [input_row(Listed("/v/same.mp4", 100, 7)), input_row(Listed("/v/bigger.mp4", 101, 7)),
            input_row(Listed("/v/touched.mp4", 100, 8)), input_row(Listed("/v/new.mp4", 100, 7)),
            input_row(Listed("/v/unread.mp4", 100, 7)), input_row(Listed("/v/notes.txt", 100, 7))]


COMMITTED = [dict(video_uri=f"/v/{name}", size=100, mtime_ns=7, status=status, etag=f'"{name}"')
             for name, status in (("same.mp4", "ok"), ("bigger.mp4", "ok"), ("touched.mp4", "no_face"),
                                  ("unread.mp4", "read_error"), ("notes.txt", "unsupported"))]


def test_only_videos_labelled_as_they_are_now_are_carried(tmp_path):
    output = committed_output(tmp_path, COMMITTED)
    staged = runs.plan(JOB, output, SETTINGS, "this listing")
    rows = listing()
    source = carry_over(staged, rows)
    carried = {row["video_uri"].rsplit("/", 1)[1]: row["carried"] for row in rows}
    # a read_error is the storage's failure, retried; a listed non-video needs no labelling
    assert carried == {"same.mp4": True, "bigger.mp4": False, "touched.mp4": False, "new.mp4": False,
                       "unread.mp4": False, "notes.txt": False}
    assert rows[0]["etag"] == '"same.mp4"'  # the probe compares the object's ETag with this
    assert (staged.units_carried, staged.units_listed) == (1, 6)
    assert "1 of 6 videos unchanged since the committed run are carried over" in runs.describe(staged)
    assert source.run_uri == results.read_commit(output).run_uri() and len(source.files["videos"]) == 1


def test_nothing_is_carried_from_other_settings_another_job_or_for_a_restart(tmp_path):
    for case, (settings, job, restart) in enumerate([({**SETTINGS, "fps": 2.0}, JOB, False),
                                                    (SETTINGS, "predict", False), (SETTINGS, JOB, True)]):
        output = committed_output(tmp_path / str(case), COMMITTED, settings, job)
        staged = runs.plan(JOB, output, SETTINGS, "this listing", restart=restart)
        rows = listing()
        assert carry_over(staged, rows) is None and not any(row["carried"] for row in rows), case
        assert staged.units_carried == 0 and "carried over" not in runs.describe(staged)
