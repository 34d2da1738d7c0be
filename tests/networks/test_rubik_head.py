"""Siamese Rubik's cube head: output shapes, no mixing across samples, the transform's targets fit it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl3d.networks import RubikCubeHead, build_encoder
from medssl3d.transforms import RandRubikCube

K = 10


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    return RubikCubeHead(build_encoder("resnet10", spatial_dims=3, in_channels=1), num_permutations=K, hidden_dim=32)


def test_output_shapes(head):
    out = head.train()(torch.randn(2, 8, 1, 16, 16, 16))
    assert out["permutation"].shape == (2, K)
    assert out["rotation"].shape == (2, 8, 3)
    assert out["mask"].shape == (2, 8)


def test_samples_do_not_mix_and_cube_order_matters(head):
    head.eval()
    cubes = torch.randn(2, 8, 1, 16, 16, 16)
    with torch.no_grad():
        both = head(cubes)
        alone = head(cubes[1:])
        swapped = head(cubes[:, [1, 0, *range(2, 8)]])
    for key in ("permutation", "rotation", "mask"):
        torch.testing.assert_close(both[key][1:], alone[key], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(both["permutation"], swapped["permutation"])


def test_transform_targets_train_the_head():
    torch.manual_seed(0)
    head = RubikCubeHead(build_encoder("resnet10", spatial_dims=3, in_channels=1), num_permutations=K, hidden_dim=32)
    transform = RandRubikCube(num_permutations=K, jitter=2, mask_prob=0.5)
    transform.set_random_state(0)
    samples = [transform(np.random.default_rng(i).random((1, 32, 32, 32), dtype=np.float32)) for i in range(2)]
    cubes = torch.as_tensor(np.stack([s[0] for s in samples]))
    permutation = torch.as_tensor([int(s[1]) for s in samples])
    rotation = torch.as_tensor(np.stack([s[2] for s in samples]))
    mask = torch.as_tensor(np.stack([s[3] for s in samples])).float()
    out = head(cubes)
    loss = (
        F.cross_entropy(out["permutation"], permutation)
        + F.cross_entropy(out["rotation"].flatten(0, 1), rotation.flatten())
        + F.binary_cross_entropy_with_logits(out["mask"], mask)
    )
    loss.backward()
    assert torch.isfinite(loss) and head.encoder.conv1.weight.grad.abs().sum() > 0


def test_ordering_only_and_errors():
    enc = build_encoder("resnet10", spatial_dims=3, in_channels=1)
    head = RubikCubeHead(enc, num_permutations=K, num_rotations=0, mask=False, hidden_dim=16)
    assert set(head(torch.randn(2, 8, 1, 12, 12, 12))) == {"permutation"}
    with pytest.raises(ValueError, match=r"RubikCubeHead: expected cubes \(B, 8, 1, 3 spatial axes\)"):
        head(torch.randn(2, 4, 1, 12, 12, 12))
