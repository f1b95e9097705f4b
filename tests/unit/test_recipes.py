"""The seed-experiment recipes under configs/: each loads through the real config loader, holds
together (the preprocess makes what the train config's family eats, the train config reads
that output) and is listed in the README's Recipes table. tests/integration/test_recipes.py
runs one training step of each."""
from __future__ import annotations

import pathlib
import re

import pytest

from fer_ray import config
from fer_ray.config import PreprocessConfig, SynthesizeConfig, TrainConfig, model_spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
KINDS = {"preprocess.yaml": PreprocessConfig, "synthesize.yaml": SynthesizeConfig}
RECIPE_FOLDERS = sorted(path for path in CONFIGS.iterdir() if path.is_dir())
YAML_FILES = sorted(CONFIGS.glob("*/*.yaml"))
TRAIN_FILES = [path for path in YAML_FILES if path.name not in KINDS]
# The seed experiments issue 25 asks recipes for: (folder, train configs in it).
EXPECTED = {"fer2013_seed001": {"dexpression_fer"}, "affectnet8_seed004": {"baseline_cnn", "resnet18"},
            "mpi_seed003": {"vgg_landmarks"}, "ckplus_seed002": {"enm", "landmark_mlp"},
            "jaffe_seed002": {"enm", "landmark_mlp"}, "jaffe_mixed_seed000": {"mixed_cnn"},
            "baum2_seed001": {"cnn_lstm", "c3d"}}


def load(path: pathlib.Path):
    """The config a recipe file makes, as `--config` loads it; URIs the file leaves to the
    command line (configs/baum2_seed001) get placeholders so that it validates."""
    cfg = KINDS.get(path.name, TrainConfig)()
    config.load_yaml_file(cfg, str(path))
    for name in ("input", "output", "data"):
        if hasattr(cfg, name) and not getattr(cfg, name):
            setattr(cfg, name, f"s3://YOUR-BUCKET/{path.parent.name}/{name}")
    cfg.validate()
    return cfg


def sibling(path: pathlib.Path, name: str):
    other = path.parent / name
    return load(other) if other.exists() else None


def test_every_seed_experiment_has_its_recipe():
    found = {folder.name: {path.stem for path in folder.glob("*.yaml") if path.name not in KINDS}
             for folder in RECIPE_FOLDERS}
    assert found == EXPECTED
    assert all((folder / "preprocess.yaml").exists() for folder in RECIPE_FOLDERS)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_loads_and_validates(path):
    cfg = load(path)
    text = path.read_text()
    assert text.startswith("#") and "fer-ray " in text.split("\n\n")[0]  # a header naming its command
    for name in ("input", "output", "data", "weights_path"):
        uri = getattr(cfg, name, "")
        assert "@" not in uri and "YOUR-BUCKET" in uri or not uri, (name, uri)  # placeholders, no credentials


@pytest.mark.parametrize("path", TRAIN_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_train_recipe_reads_what_its_folder_makes(path):
    cfg, pre, synth = load(path), sibling(path, "preprocess.yaml"), sibling(path, "synthesize.yaml")
    assert cfg.model == path.stem
    protocol = re.search(r"protocol: (fixed split|by subject|subject folds)", path.read_text(), re.I)
    assert protocol, "name the protocol"
    # CK+ and JAFFE: the field's protocol, subject folds (10-fold, leave-one-subject-out)
    assert (protocol[1].lower() == "subject folds") == (cfg.folds == 10) == path.parent.name.startswith(
        ("ckplus", "jaffe_seed"))
    spec = model_spec(cfg.model)
    if spec.input_size:  # the faces (or clip frames) the preprocess makes are what the family eats
        assert (pre.face.size, pre.face.channels) == (spec.input_size, spec.channels)
    if spec.needs_clips:
        assert pre.clip_length == cfg.clip_length
    if spec.needs_landmarks:
        assert pre.face.landmarker in ("dlib", "fan", "fan3d")
    if path.parent.name == "baum2_seed001":
        return  # its URIs are given on the command line (README)
    if synth is not None:
        assert (synth.input, cfg.data, cfg.resolved_label_set()) == (pre.output, synth.output, "mixed42")
    else:
        assert cfg.data == pre.output
    assert cfg.output not in (cfg.data, pre.input)


def recipes_table() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Recipes", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


@pytest.mark.parametrize("folder", RECIPE_FOLDERS, ids=lambda p: p.name)
def test_readme_recipes_table_lists_every_folder(folder):
    table = recipes_table()
    assert f"configs/{folder.name}/" in table
    for path in folder.glob("*.yaml"):  # and the command of each of its configs
        assert f"--config configs/{folder.name}/{path.name}" in table, path.name
