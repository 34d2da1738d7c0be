import pytest
import torch
from monai.data import list_data_collate

from medssl3d.methods import ModelsGenesis, build_method
from medssl3d.transforms import RandGenesisCorruptiond

DECODER = {"decoder_channels": (32, 32, 16, 16, 8)}  # a small decoder keeps the test fast


@pytest.fixture
def genesis_batch(smooth_volume):
    def make(size=32):
        transform = RandGenesisCorruptiond(keys="image", shuffle_prob=1.0, paint_prob=1.0).set_random_state(0)
        return list_data_collate([transform({"image": smooth_volume((size,) * 3, seed)}) for seed in range(2)])

    return make


def test_genesis_learns_to_restore(encoder3d, check_method, genesis_batch):
    method = ModelsGenesis(encoder3d, decoder_args=DECODER)
    batch = genesis_batch()
    assert not torch.equal(batch["image"], batch["target"])
    first, last = check_method(method, batch, ["restoration"], steps=10)
    assert last < 0.5 * first
    restored = method.restore(batch["image"])
    assert restored.shape == batch["target"].shape and 0 <= restored.min() and restored.max() <= 1  # sigmoid


@pytest.mark.parametrize("loss, power", [("mse", 2), ("l1", 1)])
def test_genesis_loss_compares_the_sigmoid_output_with_the_target(encoder3d, genesis_batch, loss, power):
    method = ModelsGenesis(encoder3d, loss=loss, decoder_args=DECODER).eval()
    batch = genesis_batch()
    expected = (method.restore(batch["image"]) - batch["target"]).abs().pow(power).mean()
    torch.testing.assert_close(method(batch)["loss"], expected)


def test_genesis_errors(encoder3d, genesis_batch):
    method = build_method("genesis", encoder3d, decoder_args=DECODER)
    batch = genesis_batch()
    with pytest.raises(ValueError, match=r"lacks 'target' \(written by RandGenesisCorruptiond"):
        method({"image": batch["image"]})
    with pytest.raises(ValueError, match="at least 32 voxels per side"):
        method(genesis_batch(size=24))
    with pytest.raises(ValueError, match="must match"):
        method({"image": batch["image"], "target": batch["target"][:, :, :16]})
    with pytest.raises(ValueError, match="loss must be one of"):
        ModelsGenesis(encoder3d, loss="huber")
