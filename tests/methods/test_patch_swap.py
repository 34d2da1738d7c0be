import pytest
import torch
from monai.data import list_data_collate

from medssl3d.methods import ContextRestoration, build_method
from medssl3d.transforms import RandPatchSwapd

DECODER = {"decoder_channels": (32, 32, 16, 16, 8)}  # a small decoder keeps the test fast


@pytest.fixture
def swap_batch(smooth_volume):
    def make(size=32):
        transform = RandPatchSwapd(keys="image", patch_size=8, num_swaps=4).set_random_state(0)
        return list_data_collate([transform({"image": smooth_volume((size,) * 3, seed)}) for seed in range(2)])

    return make


def test_context_restoration_learns_to_restore(encoder3d, check_method, swap_batch):
    method = build_method("patch_swap", encoder3d, decoder_args=DECODER)
    batch = swap_batch()
    assert not torch.equal(batch["image"], batch["target"])
    first, last = check_method(method, batch, ["restoration"], steps=10)
    assert last < 0.5 * first


def test_context_restoration_is_l2_on_a_linear_output(encoder3d, swap_batch):
    method = ContextRestoration(encoder3d, decoder_args=DECODER).eval()
    batch = swap_batch()
    restored = method.restore(batch["image"])
    torch.testing.assert_close(method(batch)["loss/restoration"], ((restored - batch["target"]) ** 2).mean())
    sigmoid = ContextRestoration(encoder3d, activation="sigmoid", decoder_args=DECODER).eval()
    out = sigmoid.restore(batch["image"])
    assert 0 <= out.min() and out.max() <= 1


def test_context_restoration_errors(encoder3d, swap_batch):
    method = ContextRestoration(encoder3d, decoder_args=DECODER, target_key="original")
    batch = swap_batch()
    with pytest.raises(ValueError, match=r"lacks 'original' \(written by RandPatchSwapd"):
        method(batch)
    with pytest.raises(ValueError, match="at least 32 voxels per side"):
        ContextRestoration(encoder3d, decoder_args=DECODER)(swap_batch(size=16))
    with pytest.raises(ValueError, match="activation must be"):
        ContextRestoration(encoder3d, activation="tanh")
