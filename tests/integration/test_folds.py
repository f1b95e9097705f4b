"""`fer-ray train --folds K` on the JAFFE-style sample (10 subjects): the folds are trained through
the same trainer on the cluster, split by subject, and summarised."""
from __future__ import annotations

import json
import statistics

import pyarrow.compute as pc
import pytest

from fer_ray import cli, results, storage
from fer_ray.config import ConfigError, TrainConfig
from fer_ray.training import folds

pytestmark = pytest.mark.integration
FOLDS = 3
# landmark_mlp is the cheapest family, one epoch is enough to check the folds' plumbing (not
# learning); one worker of 0.3 CPU per fold lets the 2-CPU test cluster hold all three folds at
# once beside Ray Data's reading.
ARGS = {"model": "landmark_mlp", "label_set": "basic7", "epochs": 1, "batch_size": 16, "workers": 1,
        "cpus_per_worker": 0.3, "seed": 0}


@pytest.fixture(scope="module")
def folded(jaffe_faces, bucket, capsys):
    output = f"{bucket}/runs/folds-landmark_mlp"
    code = cli.main(["train", "--data", jaffe_faces, "--output", output, "--folds", str(FOLDS), *cli.flags(ARGS)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    return output, json.loads(storage.read_bytes(f"{output}/folds.json")), printed


@pytest.fixture(scope="module")
def capsys(request):  # module-scoped stdout capture for the module fixture above
    from _pytest.capture import CaptureFixture, SysCapture

    capture = CaptureFixture(SysCapture, request, _ispytest=True)
    capture._start()
    yield capture
    capture.close()


def test_folds_test_every_subject_once_on_held_out_people(folded, jaffe_faces):
    output, summary, _ = folded
    faces = results.read_table(jaffe_faces, "faces", ["subject"])
    everyone = sorted(pc.unique(faces["subject"]).to_pylist())
    per_fold = summary["per_fold"]
    assert [fold["fold"] for fold in per_fold] == list(range(FOLDS))
    tested = [s for fold in per_fold for s in fold["test_subjects"]]
    assert sorted(tested) == everyone and len(set(tested)) == len(tested)
    for fold in per_fold:
        assert not set(fold["test_subjects"]) & set(fold["val_subjects"])
        # the fold's metrics.json counts exactly the faces of its test subjects
        metrics = json.loads(storage.read_bytes(f"{output}/fold-{fold['fold']}/metrics.json"))
        held_out = pc.sum(pc.is_in(faces["subject"], value_set=pc.cast(fold["test_subjects"], "string"))).as_py()
        assert metrics["n"] == fold["test_samples"] == held_out
        assert storage.exists(f"{output}/fold-{fold['fold']}/checkpoint.pt")


def test_folds_summary_is_the_mean_and_spread_of_the_folds(folded):
    output, summary, printed = folded
    for name in ("macro_f1", "accuracy"):
        values = [fold[name] for fold in summary["per_fold"]]
        assert summary["test"][name]["mean"] == pytest.approx(statistics.fmean(values))
        assert summary["test"][name]["std"] == pytest.approx(statistics.stdev(values))
    assert summary["folds_at_once"] == FOLDS  # (2 CPUs - 1 for reading) // (0.3 + 0.01) folds fit at once
    assert f"{FOLDS} subject folds" in printed and "mean: macro_f1=" in printed
    assert sum(line.strip().startswith("fold ") for line in printed.splitlines()) == FOLDS


def test_more_folds_than_subjects_fail_before_any_training(jaffe_faces, fer_shards, bucket):
    cfg = TrainConfig(data=jaffe_faces, output=f"{bucket}/runs/folds-too-many", folds=11, **ARGS)
    with pytest.raises(ConfigError, match=r"folds: 11, but the data at .* has 10 subjects; use at most --folds 10"):
        folds.check(cfg)
    no_subjects = TrainConfig(data=fer_shards, output=f"{bucket}/runs/folds-fer", folds=3, model="dexpression_fer")
    with pytest.raises(ConfigError, match=r"has no subjects .*--folds 0"):
        folds.check(no_subjects)
    assert not storage.exists(f"{bucket}/runs/folds-too-many")
