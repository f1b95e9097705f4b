"""Training augmentation: landmarks follow the image through flip, rotation and shift."""
from __future__ import annotations

import pytest
import torch

from fer_ray.face68 import MIRROR
from fer_ray.training.augment import augment, flip_horizontal
from fer_ray.vision.synthetic_face import canonical_landmarks, expression_params, identity_for

SIDE = 48
CENTRE = (SIDE - 1) / 2


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _central_landmarks(batch: int, radius: float, seed: int = 0) -> torch.Tensor:
    """Random points within `radius` px of the crop centre, so that rotation and shift
    keep them (and what is drawn around them) well inside the crop."""
    g = _generator(seed)
    return CENTRE + (2 * torch.rand(batch, 68, 2, generator=g) - 1) * radius


def _bilinear(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Value of a (H, W) image at (N, 2) points, pixel i centred at coordinate i. Written
    out by hand so that it does not share grid_sample's conventions with the code tested."""
    x0, y0 = points[:, 0].floor().long(), points[:, 1].floor().long()
    fx, fy = points[:, 0] - x0, points[:, 1] - y0
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


# --- flip_horizontal -------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["ann", "bob"])
def test_mirror_maps_a_symmetric_face_onto_itself(subject):
    """A neutral synthetic face (iBUG order, symmetric about its midline) centred in the
    crop is unchanged by flip_horizontal; a wrong pair (say 36<->42 instead of 36<->45)
    would move points by many pixels. (Also checked once against dlib on a mirrored photo:
    at most 1.1 px off.)"""
    canonical = canonical_landmarks(identity_for(subject), expression_params("neutral"))
    landmarks = torch.from_numpy(canonical * 15 + CENTRE)[None]
    assert (landmarks[..., 0] - (SIDE - 1 - landmarks[..., 0])).abs().max() > 10  # not trivial
    _, flipped = flip_horizontal(None, landmarks, SIDE)
    assert (flipped - landmarks).abs().max() < 1e-3


def test_flip_twice_is_identity():
    g = _generator(1)
    images = torch.rand(3, 3, SIDE, SIDE, generator=g) * 255
    # On a 1/16 px grid both x and (W-1)-x are exact in float32, so the round trip is exact;
    # arbitrary floats come back to within rounding.
    on_grid = (torch.rand(3, 68, 2, generator=g) * (SIDE - 1) * 16).round() / 16
    once = flip_horizontal(images, on_grid, SIDE)
    assert not torch.equal(once[0], images) and not torch.equal(once[1], on_grid)
    twice = flip_horizontal(*once, SIDE)
    assert torch.equal(twice[0], images) and torch.equal(twice[1], on_grid)
    anywhere = torch.rand(3, 68, 2, generator=g) * (SIDE - 1)
    back = flip_horizontal(None, flip_horizontal(None, anywhere, SIDE)[1], SIDE)[1]
    assert (back - anywhere).abs().max() < 1e-5


def test_flip_keeps_landmark_on_its_pixel():
    landmarks = _central_landmarks(1, radius=20).round()
    for k in (0, 8, 36, 48):  # jaw end, chin (midline), eye corner, mouth corner
        x, y = landmarks[0, k].long().tolist()
        image = torch.zeros(1, 1, SIDE, SIDE)
        image[0, 0, y, x] = 255
        flipped, moved = flip_horizontal(image, landmarks, SIDE)
        y_new, x_new = divmod(int(flipped[0, 0].argmax()), SIDE)
        # old point k is new point MIRROR[k] (the permutation is its own inverse)
        assert moved[0, MIRROR[k]].tolist() == [x_new, y_new]
        assert x_new == SIDE - 1 - x and y_new == y


def test_flip_with_one_argument_none():
    landmarks = _central_landmarks(2, radius=20)
    assert flip_horizontal(None, None, SIDE) == (None, None)
    image, moved = flip_horizontal(None, landmarks, SIDE)
    assert image is None and torch.equal(moved, flip_horizontal(torch.zeros(2, 1, SIDE, SIDE),
                                                                landmarks)[1])
    with pytest.raises(ValueError):
        flip_horizontal(None, landmarks)


# --- augment: image and landmark transforms agree ----------------------------------------


def _flipped(found: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Per sample: whether (B, 68, 2) points `found` match `original` better after the
    mirror re-indexing (a flipped sample) than as they are."""
    straight = (found - original).norm(dim=-1).mean(dim=1)
    mirrored = (found - original[:, list(MIRROR)]).norm(dim=-1).mean(dim=1)
    return mirrored < straight


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_landmarks_follow_image_exactly(strength):
    """Channels 0 and 1 encode each pixel's own x and y; 2 and 3 are flat references from
    which the unknown brightness/contrast is undone. After augment, reading the code at a
    moved landmark gives back where that landmark started, to a hundredth of a pixel (an
    align_corners mix-up would cost ~0.2 px here)."""
    batch = 16
    ys, xs = torch.meshgrid(torch.arange(float(SIDE)), torch.arange(float(SIDE)),
                            indexing="ij")
    image = torch.stack((60 + 1.5 * xs, 60 + 1.5 * ys, torch.full_like(xs, 60),
                         torch.full_like(xs, 160)))
    images = image.expand(batch, -1, -1, -1).clone()
    landmarks = _central_landmarks(batch, radius=10 if strength > 1 else 13)
    out, moved = augment(images, landmarks, strength, _generator(7))
    assert out.min() > 0 and out.max() < 255  # chosen so that clamping cannot interfere
    gain = (out[:, 3] - out[:, 2]) / 100
    source = torch.stack(((out[:, 0] - out[:, 2]) / gain / 1.5,
                          (out[:, 1] - out[:, 2]) / gain / 1.5), dim=-1)  # (B, H, W, 2)
    came_from = torch.stack([torch.stack((_bilinear(source[b, ..., 0], moved[b]),
                                          _bilinear(source[b, ..., 1], moved[b])), dim=-1)
                             for b in range(batch)])
    flipped = _flipped(came_from, landmarks)
    # The codes travel with the pixels, so came_from is in the original frame; a flipped
    # sample's point i is the old point MIRROR[i].
    expected = torch.where(flipped[:, None, None], landmarks[:, list(MIRROR)], landmarks)
    assert (came_from - expected).abs().max() < 0.01
    assert 0 < int(flipped.sum()) < batch  # both branches were exercised
    assert (moved - landmarks).norm(dim=-1).max() > 1  # and the points did move


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_landmarks_stay_on_their_blobs(seed):
    """Three landmarks per image, each marked by a 3x3 blob in its own channel: after
    augment each moved landmark sits on its blob's centroid (for flipped samples the point
    that does is the mirrored index, the same for all three)."""
    batch, keys = 8, (36, 48, 30)  # an eye corner, a mouth corner, the nose tip
    landmarks = _central_landmarks(batch, radius=10, seed=seed).round()
    images = torch.full((batch, 3, SIDE, SIDE), 100.0)
    for b in range(batch):
        for c, k in enumerate(keys):
            x, y = landmarks[b, k].long().tolist()
            images[b, c, y - 1:y + 2, x - 1:x + 2] += 50
    out, moved = augment(images, landmarks, 2.0, _generator(seed))
    background = out.flatten(2).median(dim=2).values[:, :, None, None]
    weight = (out - background).clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(float(SIDE)), torch.arange(float(SIDE)),
                            indexing="ij")
    centroid = torch.stack(((weight * xs).sum((2, 3)), (weight * ys).sum((2, 3))), -1) \
        / weight.sum((2, 3))[..., None]  # (B, 3, 2)
    straight = (moved[:, list(keys)] - centroid).norm(dim=-1)
    mirrored = (moved[:, [MIRROR[k] for k in keys]] - centroid).norm(dim=-1)
    flipped = mirrored[:, :2].mean(1) < straight[:, :2].mean(1)  # 30 is on the midline
    error = torch.where(flipped[:, None], mirrored, straight)
    assert error.max() < 0.5, error
    assert 0 < int(flipped.sum()) < batch


# --- augment: behaviour ------------------------------------------------------------------


def test_strength_zero_returns_the_inputs():
    images, landmarks = torch.rand(2, 1, SIDE, SIDE) * 255, _central_landmarks(2, 20)
    out = augment(images, landmarks, 0.0, _generator(0))
    assert out[0] is images and out[1] is landmarks


def test_negative_strength_rejected():
    with pytest.raises(ValueError):
        augment(torch.zeros(1, 1, SIDE, SIDE), None, -0.1)


@pytest.mark.parametrize("channels,side", [(1, 48), (3, 100)])
def test_shapes_dtypes_and_inputs_untouched(channels, side):
    g = _generator(3)
    images = torch.rand(6, channels, side, side, generator=g) * 255
    landmarks = torch.rand(6, 68, 2, generator=g) * (side - 1)
    before = images.clone(), landmarks.clone()
    out, moved = augment(images, landmarks, 1.0, _generator(4))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert moved.shape == landmarks.shape and moved.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert torch.equal(images, before[0]) and torch.equal(landmarks, before[1])


def test_output_clamped_to_pixel_range():
    """Flat white and flat black images: any brightening of white or darkening of black
    would leave 0..255 if not clamped, and over 16 samples both happen."""
    images = torch.cat((torch.full((8, 1, SIDE, SIDE), 255.0), torch.zeros(8, 1, SIDE, SIDE)))
    out, _ = augment(images, None, 1.0, _generator(5))
    assert out.min() >= 0 and out.max() <= 255
    white, black = out[:8].flatten(1), out[8:].flatten(1)
    assert (white == 255).all(1).any() and (white < 255).all(1).any()  # some darkened
    assert (black == 0).all(1).any() and (black > 0).all(1).any()  # some brightened


def test_same_seed_same_output_other_seed_other_output():
    images, landmarks = torch.rand(4, 3, SIDE, SIDE) * 255, _central_landmarks(4, 15)
    first = augment(images, landmarks, 1.0, _generator(11))
    again = augment(images, landmarks, 1.0, _generator(11))
    other = augment(images, landmarks, 1.0, _generator(12))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_landmark_only_matches_the_image_path():
    landmarks = _central_landmarks(5, 15)
    images = torch.rand(5, 1, SIDE, SIDE) * 255
    none, alone = augment(None, landmarks, 1.0, _generator(5), size=SIDE)
    _, with_images = augment(images, landmarks, 1.0, _generator(5))
    assert none is None and not torch.equal(alone, landmarks)
    assert (alone - with_images).abs().max() < 1e-5
    with pytest.raises(ValueError):
        augment(None, landmarks, 1.0)  # no crop side to rotate about


def test_each_sample_gets_its_own_transform():
    batch = 8
    images = (torch.rand(1, 1, SIDE, SIDE) * 255).expand(batch, -1, -1, -1)
    landmarks = _central_landmarks(1, 15).expand(batch, -1, -1)
    out, moved = augment(images, landmarks, 1.0, _generator(6))
    for a in range(batch):
        for b in range(a + 1, batch):
            assert not torch.equal(out[a], out[b])
            assert (moved[a] - moved[b]).abs().max() > 1e-3


def test_transform_bounded_by_strength():
    """No point moves further than the largest shift allows, once rotation (and the
    mirror, which carries point MIRROR[i] to index i) are factored out via the
    distance from the crop centre, which neither changes."""
    landmarks = _central_landmarks(64, 20)
    strength = 0.5
    _, moved = augment(None, landmarks, strength, _generator(8), size=SIDE)
    centre = torch.tensor([CENTRE, CENTRE])
    radius = (landmarks - centre).norm(dim=-1)
    new_radius = (moved - centre).norm(dim=-1)
    change = torch.minimum((new_radius - radius).abs(),
                           (new_radius - radius[:, list(MIRROR)]).abs())
    max_shift = 0.05 * strength * SIDE * 2 ** 0.5
    assert change.max() <= max_shift + 1e-4
    assert change.max() > 0.3 * max_shift  # shifts are actually applied


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images, landmarks = torch.rand(4, 3, SIDE, SIDE) * 255, _central_landmarks(4, 15)
    cpu = augment(images, landmarks, 1.0, _generator(9))
    gpu = augment(images.cuda(), landmarks.cuda(), 1.0, _generator(9))
    assert gpu[0].is_cuda and gpu[1].is_cuda
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-2, rtol=0)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-4, rtol=0)
