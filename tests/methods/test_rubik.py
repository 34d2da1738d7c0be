import pytest
import torch
import torch.nn.functional as F
from monai.data import list_data_collate

from medssl3d.methods import RubikCube, build_method
from medssl3d.networks import build_encoder
from medssl3d.transforms import RandRubikCubed

K = 10  # few ordering classes keep the heads small


@pytest.fixture
def rubik_batch(smooth_volume):
    transform = RandRubikCubed(keys="image", num_permutations=K, jitter=1, mask_prob=0.5).set_random_state(0)
    return list_data_collate([transform({"image": smooth_volume((32, 32, 32), seed)}) for seed in range(2)])


def test_rubik_cube_plus_learns(encoder3d, check_method, rubik_batch):
    method = build_method("rubik", encoder3d, num_permutations=K, hidden_dim=64, min_input_size=8)
    assert rubik_batch["image"].shape == (2, 8, 1, 15, 15, 15)
    first, last = check_method(method, rubik_batch, ["permutation", "rotation", "mask"], steps=40)
    assert last < 0.5 * first


def test_rubik_total_is_the_weighted_sum_of_the_terms(encoder3d, rubik_batch):
    method = RubikCube(encoder3d, K, hidden_dim=64, rotation_weight=0.5, mask_weight=2.0, min_input_size=8).eval()
    out = method(rubik_batch)
    logits = method.head(rubik_batch["image"])
    ordering = F.cross_entropy(logits["permutation"], rubik_batch["rubik_permutation"])
    rotation = F.cross_entropy(logits["rotation"].reshape(16, 3), rubik_batch["rubik_rotation"].reshape(16))
    mask = F.binary_cross_entropy_with_logits(logits["mask"], rubik_batch["rubik_mask"].float())
    torch.testing.assert_close(out["loss/permutation"], ordering)
    torch.testing.assert_close(out["loss/rotation"], rotation)
    torch.testing.assert_close(out["loss/mask"], mask)
    torch.testing.assert_close(out["loss"], ordering + 0.5 * rotation + 2.0 * mask)


def test_rubik_ordering_alone_needs_only_the_permutation(encoder3d, rubik_batch):
    method = RubikCube(encoder3d, K, num_rotations=0, mask=False, hidden_dim=64, min_input_size=8)
    batch = {"image": rubik_batch["image"], "rubik_permutation": rubik_batch["rubik_permutation"]}
    assert set(method(batch)) == {"loss", "loss/permutation"}
    assert set(method.batch_keys()) == {"image", "rubik_permutation"}


def test_rubik_errors(encoder3d, rubik_batch):
    method = RubikCube(encoder3d, K, hidden_dim=64, min_input_size=8)
    with pytest.raises(ValueError, match=r"lacks 'rubik_mask' \(written by RandRubikCubed"):
        method({k: v for k, v in rubik_batch.items() if k != "rubik_mask"})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\), found \[7, 9\]"):
        five = RubikCube(encoder3d, 5, hidden_dim=64, min_input_size=8)
        five(dict(rubik_batch, rubik_permutation=torch.tensor([7, 9])))
    with pytest.raises(ValueError, match=r"expected 6 dimensions \(B, 8, C, h, w, d\)"):
        method(dict(rubik_batch, image=rubik_batch["image"][:, 0]))
    # 15-voxel cubes cut from 32^3 crops are below the default minimum (the encoder's total stride)
    with pytest.raises(ValueError, match=r"'image' of spatial size \(15, 15, 15\).*at least 32 voxels"):
        RubikCube(encoder3d, K, hidden_dim=64)(rubik_batch)
    with pytest.raises(ValueError, match="3D"):
        RubikCube(build_encoder("resnet10", spatial_dims=2, in_channels=1))
