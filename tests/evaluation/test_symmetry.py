"""SymmetryGroup: one definition of the fine-tuning augmentation's group and of its test-time views."""

from __future__ import annotations

import itertools

import pytest
import torch

from medssl3d.evaluation import SymmetryGroup, predict_proba


def _cube_symmetries(volume: torch.Tensor) -> list[torch.Tensor]:
    """The 48 images of a (C, S, S, S) volume under the cube's symmetry group, written independently of the
    module: every signed permutation matrix, i.e. flips of some axes, then an axis order."""
    images = []
    for flips in itertools.product((False, True), repeat=3):
        flipped = volume.flip([1 + a for a, f in enumerate(flips) if f]) if any(flips) else volume
        images += [flipped.permute(0, *order) for order in itertools.permutations((1, 2, 3))]
    return images


def _key(image: torch.Tensor) -> tuple:
    return tuple(image.flatten().tolist())


def test_random_elements_are_cube_symmetries_drawn_per_sample():
    torch.manual_seed(0)
    batch = torch.rand(64, 1, 5, 5, 5)
    out = SymmetryGroup(3, "symmetry")(batch)
    assert out.shape == batch.shape
    drawn = set()
    for sample, augmented in zip(batch, out):
        matches = [i for i, image in enumerate(_cube_symmetries(sample)) if torch.equal(image, augmented)]
        assert len(matches) == 1  # a random volume has no symmetry of its own: exactly one element fits
        drawn.add(matches[0])
    assert len(drawn) > 20  # per sample, not one draw for the whole batch


@pytest.mark.parametrize("dims, group, count",
                         [(2, "flip", 2), (2, "symmetry", 2), (3, "flip", 8), (3, "symmetry", 48)])
def test_views_are_the_whole_group_identity_first(dims, group, count):
    batch = torch.arange(2 * 4**dims, dtype=torch.float32).reshape(2, 1, *[4] * dims)
    symmetry = SymmetryGroup(dims, group)
    images = [view(batch) for view in symmetry.views()]
    assert len(symmetry) == len(images) == count and torch.equal(images[0], batch)
    assert len({_key(image) for image in images}) == count  # all distinct
    if dims == 3 and group == "symmetry":
        expected = {_key(torch.stack([s[i] for s in map(_cube_symmetries, batch)])) for i in range(48)}
        assert {_key(image) for image in images} == expected
    if dims == 2:  # left-right only: rows keep their order
        assert torch.equal(images[1], batch.flip(-1))


@pytest.mark.parametrize("dims, group", [(2, "flip"), (3, "flip"), (3, "symmetry")])
def test_augmentation_draws_only_elements_of_the_views(dims, group):
    torch.manual_seed(1)
    symmetry = SymmetryGroup(dims, group)
    batch = torch.rand(32, 1, *[5] * dims)
    out = symmetry(batch)
    for i, augmented in enumerate(out):
        images = [view(batch[i : i + 1])[0] for view in symmetry.views()]
        assert sum(torch.equal(image, augmented) for image in images) == 1


def test_the_draw_follows_the_seed_of_fine_tuning():
    batch = torch.rand(8, 1, 4, 4, 4)
    torch.manual_seed(3)
    first = SymmetryGroup(3, "symmetry")(batch)
    torch.manual_seed(3)
    assert torch.equal(SymmetryGroup(3, "symmetry")(batch), first)


def test_test_time_average_of_an_invariant_model_is_its_prediction():
    class Invariant(torch.nn.Module):  # logits from orientation-free statistics: every view predicts the same
        def forward(self, x):
            flat = x.flatten(1)
            return torch.stack([flat.mean(1), flat.std(1)], dim=1)

    images = torch.rand(6, 1, 4, 4, 4)
    plain = predict_proba(Invariant(), images)
    averaged = predict_proba(Invariant(), images, views=SymmetryGroup(3, "symmetry").views())
    assert averaged == pytest.approx(plain, abs=1e-6)


def test_bad_settings_and_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="group must be one of"):
        SymmetryGroup(3, "rotate")
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        SymmetryGroup(1)
    with pytest.raises(ValueError, match="need a cubic batch"):
        SymmetryGroup(3, "symmetry")(torch.rand(2, 1, 4, 4, 3))
    with pytest.raises(ValueError, match="expected a batch"):
        SymmetryGroup(3)(torch.rand(1, 4, 4, 4))
    SymmetryGroup(3, "flip")(torch.rand(2, 1, 4, 4, 3))  # flips need no cube
