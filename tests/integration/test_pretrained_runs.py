"""The pretrained mini_xception through the jobs: predict with `--checkpoint pretrained` on a
fresh install, and training that starts from it (`--init pretrained`)."""
from __future__ import annotations

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from fer_ray import cli, storage
from fer_ray.config import TrainConfig
from fer_ray.labels import FER2013, JAFFE, LABEL_SETS
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import pretrained
from fer_ray.sample_data import write_sample_data
from fer_ray.training import trainer
from tests.integration.helpers import run_preprocess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jaffe_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    write_sample_data(str(root), layouts=("jaffe",))
    return root / "jaffe"


def test_predict_with_the_pretrained_model_out_of_the_box(ray_cluster, jaffe_images, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for source in jaffe_images.iterdir():
        (images / source.name).write_bytes(source.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    output = tmp_path / "labels.csv"  # several batches: the CSV is written batch by batch
    assert cli.main(["predict", "--checkpoint", "pretrained", "--input", str(images), "--output", str(output),
                     "--batch-size", "16"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    rows = pacsv.read_csv(output).to_pylist()
    assert len({r["source_uri"] for r in rows}) == len(list(images.iterdir()))
    assert [r["status"] for r in rows if r["source_uri"].endswith("broken.jpg")] == ["decode_error"]
    faces = [r for r in rows if r["status"] == "ok"]
    assert len(faces) == len(list(jaffe_images.iterdir()))
    assert f"status: decode_error=1, ok={len(faces)}" in printed and f"predictions: {output}" in printed
    assert np.allclose([sum(r[f"p_{name}"] for name in FER2013) for r in faces], 1.0, atol=1e-4)
    # the sample faces are drawn expressions; a model trained on real faces reads most of them
    truth = [JAFFE[r["source_uri"].rsplit("/", 1)[-1].split(".")[1][:2]] for r in faces]
    accuracy = np.mean([r["label"] == expected for r, expected in zip(faces, truth)])
    assert accuracy > 2 / len(FER2013), accuracy


def test_training_starts_from_the_pretrained_weights(ray_cluster, jaffe_images, tmp_path):
    data = str(tmp_path / "faces64")
    summary = run_preprocess("jaffe", str(jaffe_images), data, size=64, crop="margin", smooth=False)
    assert summary["status"] == {"ok": summary["inputs"]}
    cfg = TrainConfig(data=data, output=str(tmp_path / "run"), model="mini_xception", init="pretrained",
                      label_set="canonical8", epochs=1, lr=1e-7, weight_decay=0.0, augment=0.0, workers=1,
                      batch_size=32, cpus_per_worker=0.5)
    trainer.run(cfg)
    trained = ckpt.load(storage.join(cfg.output, "checkpoint.pt"))
    original = ckpt.load(pretrained.NAME)
    assert trained["face"]["crop"] == "margin" and trained["class_names"] == list(LABEL_SETS["canonical8"])
    assert torch.equal(trained["norm"]["mean"], original["norm"]["mean"])  # the weights' own input scaling
    for key, value in original["model"].items():
        if key.endswith(("weight", "bias")) and not key.startswith("head.") and "bn" not in key:
            assert torch.allclose(trained["model"][key], value, atol=1e-4), key  # lr 1e-7: barely moved
    for name in FER2013:  # the head's rows of the seven shared classes, contempt's new
        row = trained["model"]["head.weight"][LABEL_SETS["canonical8"].index(name)]
        assert torch.allclose(row, original["model"]["head.weight"][FER2013.index(name)], atol=1e-4), name
