import pytest
import torch
import torch.nn.functional as F
from monai.data import list_data_collate

from medssl3d.methods import JigsawPuzzle, RelativePatchLocation, build_method
from medssl3d.networks import build_encoder
from medssl3d.transforms import RandJigsawd, RandRelativePatchLocationd

K = 10  # few permutation classes keep the head small


def puzzle_batch(smooth_volume, transform, spatial_dims):
    transform.set_random_state(0)
    return list_data_collate([transform({"image": smooth_volume((32,) * spatial_dims, s)}) for s in range(2)])


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_jigsaw_learns(check_method, smooth_volume, spatial_dims):
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", spatial_dims=spatial_dims, in_channels=1)
    grid = 2 if spatial_dims == 3 else 3  # 2x2x2 cubes keep the 3D test fast; 3x3 tiles as Noroozi & Favaro
    method = build_method("jigsaw", encoder, num_permutations=K, grid_size=grid, hidden_dim=64, min_input_size=8)
    transform = RandJigsawd("image", spatial_dims=spatial_dims, grid_size=grid, num_permutations=K, jitter=1)
    batch = puzzle_batch(smooth_volume, transform, spatial_dims)
    assert batch["image"].shape == (2, grid**spatial_dims, 1, *(32 // grid - 1,) * spatial_dims)
    first, last = check_method(method, batch, ["jigsaw"], steps=20)
    assert last < 0.5 * first


def test_relative_location_learns(encoder3d, check_method, smooth_volume):
    method = build_method("relative_location", encoder3d, hidden_dim=64, min_input_size=8)
    batch = puzzle_batch(smooth_volume, RandRelativePatchLocationd("image", jitter=1), 3)
    assert batch["image"].shape == (2, 2, 1, 9, 9, 9) and method.num_classes == 26
    first, last = check_method(method, batch, ["relative_location"], steps=40)
    assert last < 0.5 * first


def test_patches_are_concatenated_in_input_order(encoder3d, smooth_volume):
    method = RelativePatchLocation(encoder3d, hidden_dim=None, min_input_size=8).eval()
    batch = puzzle_batch(smooth_volume, RandRelativePatchLocationd("image", jitter=1), 3)
    centre, neighbour = encoder3d.embed(batch["image"][:, 0]), encoder3d.embed(batch["image"][:, 1])
    logits = method.head(torch.cat([centre, neighbour], dim=1))
    torch.testing.assert_close(method(batch)["loss"], F.cross_entropy(logits, batch["relative_location_label"]))
    swapped = dict(batch, image=batch["image"].flip(1))  # centre and neighbour exchanged: another input
    assert not torch.allclose(method(swapped)["loss"], method(batch)["loss"])


def test_jigsaw_errors(encoder3d, smooth_volume):
    method = JigsawPuzzle(encoder3d, K, hidden_dim=64, min_input_size=8)
    batch = puzzle_batch(smooth_volume, RandJigsawd("image", num_permutations=K, jitter=1), 3)
    with pytest.raises(ValueError, match=r"lacks 'jigsaw_label' \(written by RandJigsawd"):
        method({"image": batch["image"]})
    with pytest.raises(ValueError, match=r"expected \(B, 27, C, \*patch\)"):
        method(dict(batch, image=batch["image"][:, :8]))
    relative = RelativePatchLocation(encoder3d, hidden_dim=64, min_input_size=8)
    with pytest.raises(ValueError, match=r"lacks 'relative_location_label' \(written by RandRelativePatchLocationd"):
        relative(batch)
    # 9-voxel patches of a 32^3 crop cut 3x3x3 are below the default minimum, the encoder's total stride
    with pytest.raises(ValueError, match=r"spatial size \(9, 9, 9\).*at least 32 voxels.*min_input_size"):
        JigsawPuzzle(encoder3d, K, hidden_dim=64)(batch)
    with pytest.raises(ValueError, match="min_input_size must be an int >= 8"):  # the 3D ResNet's smallest side
        JigsawPuzzle(encoder3d, K, min_input_size=7)
