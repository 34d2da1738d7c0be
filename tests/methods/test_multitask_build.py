import pytest
import torch

from medssl3d.methods import METHODS, ModelsGenesis, RotationPrediction, SimCLR
from medssl3d.methods.multitask import MultiTask, build_multitask
from medssl3d.networks import build_encoder

KEYS = {"genesis": {"image_key": "genesis_image", "target_key": "genesis_target"},
        "rotation": {"image_key": "rotation_image", "min_input_size": 16}}


def encoder2d():
    torch.manual_seed(0)
    return build_encoder("resnet10", spatial_dims=2, in_channels=1)


def test_builds_the_named_methods_on_one_encoder(smooth_volume):
    encoder = encoder2d()
    multitask = build_multitask(["genesis", "rotation", "simclr"], encoder, weights={"rotation": 0.5},
                                method_args={**KEYS, "simclr": {"projection_dim": 16}})
    assert isinstance(multitask, MultiTask) and list(multitask.methods) == ["genesis", "rotation", "simclr"]
    genesis, rotation, simclr = multitask.methods.values()
    assert [type(m) for m in (genesis, rotation, simclr)] == [ModelsGenesis, RotationPrediction, SimCLR]
    assert all(method.encoder is encoder for method in multitask.methods.values())
    # method_args reach each method class; the others keep their defaults
    assert (genesis.image_key, genesis.target_key, genesis.loss_name) == ("genesis_image", "genesis_target", "mse")
    assert (rotation.image_key, rotation.min_input_size, genesis.min_input_size) == ("rotation_image", 16, 32)
    assert multitask.task_weights() == {"genesis": 1.0, "rotation": 0.5, "simclr": 1.0}

    images = torch.stack([smooth_volume((32, 32), seed) for seed in range(4)])
    batch = {"genesis_image": images.flip(-1), "genesis_target": images, "rotation_image": images.transpose(-1, -2),
             "rotation_label": torch.tensor([0, 1, 2, 3]), "view_0": images, "view_1": images * 0.8}
    out = multitask.eval()(batch)
    torch.testing.assert_close(out["loss"], out["loss/genesis"] + 0.5 * out["loss/rotation"] + out["loss/simclr"])


def test_uncertainty_weighting_and_a_single_name():
    multitask = build_multitask(["genesis", "rotation"], encoder2d(), weighting="uncertainty",
                                method_args={"genesis": KEYS["genesis"]})
    assert multitask.log_vars.shape == (2,)
    assert list(build_multitask("rotation", encoder2d()).methods) == ["rotation"]


def test_unknown_task_lists_the_registered_methods():
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['rotatoin'\]; registered methods: ") as err:
        build_multitask(["genesis", "rotatoin"], encoder2d())
    assert all(name in str(err.value) for name in METHODS)


def test_colliding_batch_keys_fail_naming_the_key():
    # Models Genesis and rotation prediction both read `image` by default, written by different transforms
    with pytest.raises(ValueError, match=r"tasks 'genesis' and 'rotation' both read batch key 'image'"):
        build_multitask(["genesis", "rotation"], encoder2d())
    # the two-view methods read the same views from the same transform: no collision
    assert list(build_multitask(["simclr", "vicreg"], encoder2d()).batch_keys()) == ["view_0", "view_1"]


def test_other_errors():
    with pytest.raises(ValueError, match="at least one method"):
        build_multitask([], encoder2d())
    with pytest.raises(ValueError, match=r"tasks \['simclr'\] are listed more than once"):
        build_multitask(["simclr", "rotation", "simclr"], encoder2d())
    with pytest.raises(ValueError, match=r"method_args name \['genesis'\], which are not among the tasks"):
        build_multitask(["simclr"], encoder2d(), method_args={"genesis": {"loss": "l1"}})
    with pytest.raises(ValueError, match=r"weights name \['genesis'\]"):
        build_multitask(["simclr"], encoder2d(), weights={"genesis": 2.0})


def test_check_input_size_asks_every_task():
    multitask = build_multitask(["genesis", "rotation"], encoder2d(), method_args=KEYS)
    multitask.check_input_size((32, 32))
    # rotation accepts 24 (min 16) but Models Genesis needs the encoder's stride, 32
    with pytest.raises(ValueError, match=r"ModelsGenesis: the encoder sees crops of spatial size \(24, 24\)"):
        multitask.check_input_size((24, 24), "crops")
