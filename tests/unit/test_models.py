"""Model registry and families: every family builds, runs forward/backward on its declared
inputs, and every parameter is reached by the gradient (a dead branch would show as None)."""
from __future__ import annotations

import pytest
import torch

from fer_ray.face68 import JAW
from fer_ray.models import ModelSpec, create_model, features, get_spec, list_models, register_model
from fer_ray.models.dexpression import DEXPRESSION_FER_FLAT, dexpression_fer_trunk

# Keep c3d fast: its two 4096-wide FC layers are not what these tests check.
SMALL_KWARGS = {"c3d": {"fc_size": 32}}
EXPECTED_FAMILIES = {"baseline_cnn", "c3d", "cnn_lstm", "dexpression", "dexpression_fer", "enm",
                     "landmark_mlp", "mini_xception", "mixed_cnn", "resnet18", "vgg_landmarks"}


def _inputs(name: str, seed: int = 0) -> tuple:
    return get_spec(name).example_inputs(2, generator=torch.Generator().manual_seed(seed))


def test_all_families_registered():
    assert set(list_models()) == EXPECTED_FAMILIES  # a new family is added here on purpose
    assert all(get_spec(name).name == name for name in list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    spec = get_spec(name)
    model = create_model(name, **SMALL_KWARGS.get(name, {}))
    output = model(*_inputs(name))
    assert output.shape == (2, spec.default_num_classes)
    output.square().mean().backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name}.{param_name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"


@pytest.mark.parametrize("name", [n for n in list_models() if get_spec(n).needs_landmarks])
def test_landmarks_change_the_output(name):
    """Landmarks are inputs, not parameters: check the landmark branch is wired in."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    inputs = list(_inputs(name))
    # Non-rigid: a shift or scale alone is normalised away by vgg_landmarks, by design.
    gen = torch.Generator().manual_seed(1)
    shifted = inputs[:-1] + [inputs[-1] + torch.randn(inputs[-1].shape, generator=gen) * 3]
    with torch.no_grad():
        assert not torch.allclose(model(*inputs), model(*shifted))


def test_landmark_mlp_standardises_each_distance_from_what_it_trained_on():
    """Its inputs move by a tenth of their size between expressions: standardised per distance
    (batch statistics in training, their running averages in eval), a batch of one included."""
    torch.manual_seed(0)
    model = create_model("landmark_mlp", dropout=0.0)
    faces = features.normalise_points(torch.randn(64, 68, 2)) * 20 + 24
    for _ in range(50):
        model(faces)  # training mode: the running statistics follow the batches
    norm = model.standardise.norm
    expected = features.pairwise_distances(faces)
    off_diagonal = expected.std(dim=0) > 0
    torch.testing.assert_close(norm.running_mean[off_diagonal], expected.mean(dim=0)[off_diagonal],
                               rtol=0.02, atol=1e-4)
    assert model(faces[:1]).shape == (1, 8)  # a last batch of one still trains
    model.eval()
    assert expected[:, off_diagonal].std(dim=0).mean() < 0.5  # raw: distances / 60 barely move
    assert 0.85 < norm(expected)[:, off_diagonal].std(dim=0).mean() < 1.1  # (BatchNorm's eps shrinks it a little)


def test_num_classes_override():
    assert create_model("dexpression_fer", num_classes=3)(*_inputs("dexpression_fer")).shape == (2, 3)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_model("foo")
    message = str(err.value)
    assert "'foo' is not a registered family" in message
    assert ", ".join(list_models()) in message


def test_duplicate_registration_raises():
    spec = get_spec("dexpression_fer")
    with pytest.raises(ValueError, match="already registered"):
        register_model("dexpression_fer", spec)


def test_spec_round_trips_without_builder():
    fields = get_spec("enm").to_dict()
    assert "builder" not in fields and fields["input_size"] == 100 and fields["needs_landmarks"]
    with pytest.raises(ValueError):
        ModelSpec(name="x", input_size=48, channels=1, needs_landmarks=False, needs_clips=True, clip_length=0,
                  default_num_classes=7, label_set="basic7", builder=lambda num_classes: None)


def test_dexpression_fer_size_and_flatten():
    params = sum(p.numel() for p in create_model("dexpression_fer").parameters())
    assert abs(params - 486_000) / 486_000 < 0.05
    with torch.no_grad():
        feature_map = dexpression_fer_trunk()(torch.zeros(2, 1, 48, 48))
    assert feature_map.shape[1:] == (272, 6, 6)
    assert DEXPRESSION_FER_FLAT == 6 * 6 * 272


def test_pairwise_distances_shape_diagonal_translation():
    landmarks = torch.rand(3, 68, 2) * 100
    distances = features.pairwise_distances(landmarks)
    assert distances.shape == (3, features.PAIRWISE_DIM) == (3, 51 * 51)
    matrix = distances.view(3, 51, 51)
    assert torch.all(torch.diagonal(matrix, dim1=1, dim2=2) == 0)
    assert torch.allclose(matrix, matrix.transpose(1, 2))
    shifted = features.pairwise_distances(landmarks + torch.tensor([13.0, -7.0]))
    assert torch.allclose(distances, shifted, atol=1e-4)
    # The jaw (points 0-16) is ignored.
    moved_jaw = landmarks.clone()
    moved_jaw[:, JAW] += 30
    assert torch.equal(features.pairwise_distances(moved_jaw), distances)
    # One known distance: a 3-4-5 triangle, divided by the seed's 60.
    points = torch.zeros(1, 68, 2)
    points[0, 18] = torch.tensor([3.0, 4.0])
    assert features.pairwise_distances(points).view(51, 51)[0, 1].item() == pytest.approx(5 / 60)


def test_normalise_points_translation_and_scale_invariant():
    landmarks = torch.rand(2, 68, 2) * 48
    normalised = features.normalise_points(landmarks)
    assert torch.allclose(normalised, features.normalise_points(landmarks * 2.5 + 10), atol=1e-5)
    assert torch.allclose(normalised.mean(dim=1), torch.zeros(2, 2), atol=1e-5)


def test_region_mask_squares():
    points = torch.full((1, 68, 2), 50.0)
    points[0, JAW] = 0.0  # jaw points must not open the mask
    mask = features.region_mask(points, 100)
    assert mask.shape == (1, 1, 100, 100)
    assert mask[0, 0, 0, 0] == 0
    # The nose squares (half size 12) are the largest: rows/cols 38..62 inclusive.
    assert mask[0, 0].sum() == 25 * 25
    assert mask[0, 0, 38, 62] == 1 and mask[0, 0, 37, 50] == 0


def test_resnet18_weights_path_round_trip(tmp_path):
    torch.manual_seed(0)
    original = create_model("resnet18").eval()
    path = tmp_path / "resnet18.pt"
    torch.save(original.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_model("resnet18", weights_path=str(path)).eval()
    image = _inputs("resnet18")[0]
    with torch.no_grad():
        assert torch.equal(original(image), loaded(image))


def test_resnet18_imagenet_head_is_replaced(tmp_path):
    """A 1000-way checkpoint loads its backbone; the head stays ours."""
    backbone = create_model("resnet18", num_classes=1000)
    path = tmp_path / "imagenet.pt"
    torch.save(backbone.state_dict(), path)
    model = create_model("resnet18", weights_path=str(path))
    assert model.fc.out_features == 8
    assert torch.equal(model.conv1.weight, backbone.conv1.weight)


def test_resnet18_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_model("resnet18", weights_path=str(tmp_path / "absent.pt"))
