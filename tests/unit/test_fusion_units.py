"""Synthesis work units planned from the subject column alone (no Ray)."""
import numpy as np

from fer_ray.pipelines.fusion_units import UNIT_FACE_BYTES, plan_units, unit_size


def positions(units: list[dict], files: list[np.ndarray]) -> list[tuple[str, int, int]]:
    """(unit, file, row) of every face the units read."""
    return [(u["unit"], f, r) for u in units for f, rows in zip(u["files"], u["rows"]) for r in rows]


def test_every_face_is_read_once_and_each_subject_by_one_unit():
    rng = np.random.default_rng(0)
    files = [rng.choice(["A", "B", "C", "D", "E", ""], size=n).astype(object) for n in (7, 12, 5)]
    units = plan_units(files, size=6)
    read = positions(units, files)
    assert sorted((f, r) for _, f, r in read) == [(f, r) for f, s in enumerate(files) for r in range(len(s))]
    unit_of_subject = {}
    for unit, f, r in read:
        subject = files[f][r]
        if subject:
            assert unit_of_subject.setdefault(subject, unit) == unit  # a subject is never split
    assert len({u["unit"] for u in units}) == len(units)


def test_faces_without_a_subject_are_read_without_pixels_in_units_of_their_own():
    files = [np.array(["", "A", "", "A", ""], dtype=object), np.array(["B", "", "B"], dtype=object)]
    units = plan_units(files, size=2)
    nameless = [u for u in units if not u["pixels"]]
    assert sorted((f, r) for u in nameless for f, rows in zip(u["files"], u["rows"]) for r in rows) == [
        (0, 0), (0, 2), (0, 4), (1, 1)]
    assert all(sum(map(len, u["rows"])) <= 2 for u in nameless)
    named = [files[f][r] for u in units if u["pixels"] for f, rows in zip(u["files"], u["rows"]) for r in rows]
    assert sorted(named) == ["A", "A", "B", "B"]


def test_units_follow_the_files_so_contiguous_subjects_read_few_files():
    files = [np.array(list("AAABBB"), dtype=object), np.array(list("BCCCDD"), dtype=object),
             np.array(list("DEEEFF"), dtype=object)]
    units = plan_units(files, size=5)
    assert [u["files"] for u in units] == [[0, 1], [1, 2], [2]]
    assert units == plan_units(files, size=5)  # the same input plans the same units (resume relies on it)


def test_unit_size_gives_every_core_several_units_and_caps_the_bytes():
    assert unit_size(faces=3_600, face_bytes=2_304, cpus=2) == 450
    assert unit_size(faces=10_000_000, face_bytes=150_528, cpus=2) == UNIT_FACE_BYTES // 150_528
    assert unit_size(faces=1, face_bytes=2_304, cpus=64) == 1


def test_no_files_plan_no_units():
    assert plan_units([], size=10) == []
