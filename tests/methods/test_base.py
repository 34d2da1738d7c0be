import pytest
import torch

from medssl3d.methods import METHODS, RotationPrediction, ScanMatching, SSLMethod, build_method
from medssl3d.networks import build_encoder

PRETEXT = [
    "genesis",
    "rubik",
    "rotation",
    "jigsaw",
    "relative_location",
    "patch_swap",
    "masked",
    "position",
    "scan_matching",
]


def test_registry_builds_every_pretext_method_on_one_encoder(encoder3d):
    for name in PRETEXT:
        cls = METHODS[name]
        method = build_method(name, encoder3d)
        assert type(method) is cls and issubclass(cls, SSLMethod) and method.encoder is encoder3d
        assert method.batch_keys() and all(isinstance(k, str) for k in method.batch_keys())
    with pytest.raises(ValueError, match=r"Unknown method 'rubiks'; registered methods: .*genesis, .*rubik"):
        build_method("rubiks", encoder3d)


def test_methods_on_a_shared_encoder_sum_into_one_objective(encoder3d):
    """What a multitask wrapper does: methods on one encoder, their totals summed, one backward for both."""
    rotation, matching = RotationPrediction(encoder3d), ScanMatching(encoder3d)
    batch = {
        "image": torch.rand(3, 1, 32, 32, 32),
        "rotation_label": torch.tensor([0, 4, 9]),
        "scan_index": torch.tensor([5, 5, 7]),
    }
    total = rotation(batch)["loss"] + matching(batch)["loss"]
    total.backward()
    assert encoder3d.layer1[0].conv1.weight.grad.abs().sum() > 0
    shared = {id(p) for p in rotation.parameters()} & {id(p) for p in matching.parameters()}
    assert shared == {id(p) for p in encoder3d.parameters()}
    assert {**rotation.batch_keys(), **matching.batch_keys()}.keys() == {"image", "rotation_label", "scan_index"}


def test_input_size_is_checked_up_front(encoder3d):
    method = RotationPrediction(encoder3d)
    assert method.min_input_size == 32  # resnet10's total stride
    method.check_input_size((32, 32, 32))
    with pytest.raises(ValueError, match=r"spatial size \(64, 64, 16\).*at least 32 voxels.*down to 8"):
        method.check_input_size((64, 64, 16), "crops")
    with pytest.raises(ValueError, match=r"spatial size \(64, 64, 32\), whose sides differ"):
        method.check_input_size((64, 64, 32), "crops")
    RotationPrediction(encoder3d, on_shape_change="skip").check_input_size((64, 64, 32))
    with pytest.raises(ValueError, match="must be a medssl3d Encoder"):
        RotationPrediction(torch.nn.Conv3d(1, 1, 3))
    # a DenseNet cannot take sides below 29: no method may accept them
    densenet = build_encoder("densenet121", spatial_dims=2, in_channels=1)
    with pytest.raises(ValueError, match="min_input_size must be an int >= 29"):
        RotationPrediction(densenet, min_input_size=16)
