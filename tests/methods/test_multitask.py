import pytest
import torch

from medssl3d.methods import BYOL, MultiTask, RotationPrediction, SimCLR
from medssl3d.networks import build_encoder


def encoder2d():
    torch.manual_seed(0)
    return build_encoder("resnet10", spatial_dims=2, in_channels=1)


def methods_on(encoder):
    """A contrastive, a momentum and a pretext-classification method on one encoder (small heads)."""
    return {
        "simclr": SimCLR(encoder, projection_dim=32),
        "byol": BYOL(encoder, projection_dim=32, projection_hidden_dim=64, prediction_hidden_dim=64),
        "rotation": RotationPrediction(encoder),
    }


@pytest.fixture
def batch(smooth_volume):
    images = torch.stack([smooth_volume((32, 32), seed) for seed in range(4)])
    return {
        "view_0": images * 0.9 + 0.05,
        "view_1": images.flip(-1),
        "image": torch.rot90(images, 1, dims=(-2, -1)),
        "rotation_label": torch.tensor([1, 1, 1, 1]),
    }


def test_fixed_weights_total_is_the_weighted_sum_of_the_methods(check_method, batch):
    multitask = MultiTask(methods_on(encoder2d()), weights={"simclr": 2.0, "rotation": 0.5})
    assert multitask.task_weights() == {"simclr": 2.0, "byol": 1.0, "rotation": 0.5}
    assert multitask.batch_keys().keys() == {"view_0", "view_1", "image", "rotation_label"}
    out = multitask.eval()(batch)
    parts = {"simclr", "simclr/simclr", "byol", "byol/byol", "rotation", "rotation/rotation"}
    assert set(out) == {"loss", *(f"loss/{p}" for p in parts)}
    torch.testing.assert_close(out["loss"], 2.0 * out["loss/simclr"] + out["loss/byol"] + 0.5 * out["loss/rotation"])
    torch.testing.assert_close(out["loss/rotation"], multitask.methods["rotation"](batch)["loss"])
    # the shared encoder is one set of parameters; the optimiser sees each weight once
    ids = [id(p) for p in multitask.parameters()]
    assert len(ids) == len(set(ids)) and {id(p) for p in multitask.encoder.parameters()} <= set(ids)
    first, last = check_method(multitask, batch, parts, steps=8)
    assert last < first - 1.0


def test_uncertainty_weighting_learns_log_variances(batch):
    multitask = MultiTask(methods_on(encoder2d()), weighting="uncertainty")
    with torch.no_grad():
        multitask.log_vars.copy_(torch.tensor([0.5, -1.0, 0.0]))
    out = multitask.eval()(batch)
    s = multitask.log_vars.detach()
    tasks = torch.stack([out["loss/simclr"], out["loss/byol"], out["loss/rotation"]])
    torch.testing.assert_close(out["loss"], (torch.exp(-s) * tasks + s).sum())
    out["loss"].backward()
    # d/ds_i = 1 - exp(-s_i) L_i
    torch.testing.assert_close(multitask.log_vars.grad, 1 - torch.exp(-s) * tasks.detach())
    expected = dict(zip(["simclr", "byol", "rotation"], torch.exp(-s).tolist(), strict=True))
    assert multitask.task_weights() == pytest.approx(expected)


def test_drop_one_ablation_runs_without_each_method(batch):
    full = methods_on(encoder2d())
    for dropped in full:
        kept = {name: method for name, method in full.items() if name != dropped}
        multitask = MultiTask(kept, weighting="uncertainty")
        out = multitask(batch)
        assert torch.isfinite(out["loss"]) and len(multitask.log_vars) == 2
        assert not any(key.startswith(f"loss/{dropped}") for key in out)


def test_momentum_update_reaches_the_methods_with_a_target(batch):
    multitask = MultiTask(methods_on(encoder2d()))
    byol = multitask.methods["byol"]
    with torch.no_grad():
        for p in multitask.encoder.parameters():
            p.add_(1.0)
    multitask.momentum_update(0.0)
    for t, o in zip(byol.target_encoder.parameters(), multitask.encoder.parameters(), strict=True):
        torch.testing.assert_close(t, o)


def test_errors(batch):
    encoder = encoder2d()
    with pytest.raises(ValueError, match=r"share one encoder instance, but \['rotation'\] hold a different encoder"):
        MultiTask({"simclr": SimCLR(encoder), "rotation": RotationPrediction(encoder2d())})
    with pytest.raises(ValueError, match="at least one method"):
        MultiTask({})
    with pytest.raises(ValueError, match="must be an SSLMethod"):
        MultiTask({"simclr": SimCLR(encoder), "head": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="weighting must be 'fixed' or 'uncertainty'"):
        MultiTask({"simclr": SimCLR(encoder)}, weighting="gradnorm")
    with pytest.raises(ValueError, match="weights are learned"):
        MultiTask({"simclr": SimCLR(encoder)}, weighting="uncertainty", weights={"simclr": 2.0})
    with pytest.raises(ValueError, match=r"weights name \['simclr2'\]"):
        MultiTask({"simclr": SimCLR(encoder)}, weights={"simclr2": 2.0})
    with pytest.raises(ValueError, match=r"lacks 'rotation_label' \(written by RandRotationPredictiond"):
        MultiTask({"rotation": RotationPrediction(encoder)})({"image": batch["image"]})
