"""The Python API on the session's Ray cluster: README's example as written, readers on S3 outputs."""
from __future__ import annotations

import ast
import pathlib
import re

import numpy as np

import fer_ray
from fer_ray import results

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_example() -> str:
    """The first Python block of README's "Python API" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_as_a_notebook(code: str, scope: dict):
    """Run `code` as a notebook cell: every statement, and the value of a last expression (what it shows)."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "README.md (Python API)", "exec"), scope)
    return eval(compile(ast.Expression(last.value), "README.md (Python API)", "eval"), scope) if last else None


def test_the_readme_example_runs_as_written(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    shown = run_as_a_notebook(readme_example(), scope)
    faces, summary = scope["faces"], results.committed(str(tmp_path / "out/fer2013"), "output").summary()
    assert len(faces) == summary["faces_by_split"]["train"] > 0 and set(faces.split) == {"train"}
    size = summary_face_size(tmp_path / "out/fer2013")
    assert all(face.shape == (size, size) and face.dtype == np.uint8 for face in faces.face)
    # what the cell shows: a contact sheet of 8 faces upscaled 3x, the landmarks in colour on grey faces
    sheet = np.asarray(shown)
    assert sheet.ndim == 3 and sheet.shape[1] >= 8 * 3 * size
    assert (sheet[..., 0] != sheet[..., 1]).any()


def summary_face_size(output: pathlib.Path) -> int:
    return int(results.committed(str(output), "output").config()["face"]["size"])


def test_read_faces_on_s3_decodes_every_split(fer_shards):
    """The session's FER2013-style faces on the S3 test server: each split as the summary counts it."""
    by_split = results.committed(fer_shards, "output").summary()["faces_by_split"]
    size = int(results.committed(fer_shards, "output").config()["face"]["size"])
    for split in ("train", "val", "test"):
        faces = fer_ray.read_faces(fer_shards, split=split, columns=["sample_id", "face", "landmarks", "split"])
        assert len(faces) == by_split[split] and set(faces.split) == {split}
        assert {face.shape for face in faces.face} == {(size, size)}
        assert {points.shape for points in faces.landmarks} == {(68, 2)}
        assert all(points.dtype == np.float32 and np.isfinite(points).all() for points in faces.landmarks)
    manifest = fer_ray.read_manifest(fer_shards)
    assert len(manifest) == results.committed(fer_shards, "output").summary()["inputs"]



def test_a_job_function_is_quiet_unless_asked(ray_cluster, tmp_path, capfd):
    """As the CLI: one line names the run's log, where Ray Data's records go; verbose=True
    leaves them where Ray sends them (no log named)."""
    from fer_ray.sample_data import write_sample_data

    write_sample_data(str(tmp_path / "raw"), layouts=("jaffe",))
    fields = {"layout": "jaffe", "input": str(tmp_path / "raw/jaffe"), "limit": 8}
    fer_ray.preprocess(output=str(tmp_path / "quiet"), **fields)
    shown = capfd.readouterr()
    said = re.search(r"fer_ray.preprocess: Ray's own output goes to (\S+) \(verbose=True shows it here\)", shown.out)
    assert said, shown.out
    assert "Execution plan" not in shown.out + shown.err
    assert "Execution plan" in pathlib.Path(said.group(1)).read_text()

    fer_ray.preprocess(output=str(tmp_path / "verbose"), verbose=True, **fields)
    shown = capfd.readouterr()
    assert "own output goes to" not in shown.out + shown.err
    assert fer_ray.read_manifest(str(tmp_path / "verbose")).status.tolist() == ["ok"] * 8
