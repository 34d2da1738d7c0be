"""The two-view methods: SimCLR, DCL(W), MoCo, SimSiam, BYOL, VICReg (small heads to keep the tests fast)."""

import math

import pytest
import torch
import torch.nn.functional as F

from medssl3d.methods import BYOL, DCL, METHODS, MoCo, SimCLR, SimSiam, VICReg, build_method
from medssl3d.networks import build_encoder

# name -> (class, small-head kwargs, loss parts)
SMALL = {
    "simclr": (SimCLR, {"projection_dim": 32}, ["simclr"]),
    "dcl": (DCL, {"projection_dim": 32}, ["dcl"]),
    "dclw": (DCL, {"projection_dim": 32, "sigma": 0.5}, ["dcl"]),
    "moco": (MoCo, {"projection_dim": 32, "queue_size": 4096}, ["moco"]),
    "simsiam": (SimSiam, {"projection_dim": 64, "prediction_hidden_dim": 16}, ["simsiam"]),
    "byol": (BYOL, {"projection_dim": 32, "projection_hidden_dim": 64, "prediction_hidden_dim": 64}, ["byol"]),
    "vicreg": (VICReg, {"expander_dim": 64}, ["invariance", "variance", "covariance"]),
}


def test_registry_names_the_two_view_methods(encoder3d):
    for name in ("simclr", "dcl", "moco", "simsiam", "byol"):  # VICReg's default 8192-wide expander is slow to build
        assert type(build_method(name, encoder3d)) is METHODS[name] is SMALL[name][0]
    assert METHODS["vicreg"] is VICReg


def build(name, spatial_dims=2, **kwargs):
    cls, small, _ = SMALL[name]
    torch.manual_seed(0)
    return cls(build_encoder("resnet10", spatial_dims=spatial_dims, in_channels=1), **{**small, **kwargs})


def two_views(smooth_volume, spatial_dims=2, batch=4):
    """Two different augmentations of the same ``batch`` images: intensity jitter and a flip."""
    images = torch.stack([smooth_volume((32,) * spatial_dims, seed) for seed in range(batch)])
    return {"view_0": images * 0.9 + 0.05, "view_1": images.flip(-1)}


@pytest.mark.parametrize("name", list(SMALL))
def test_two_view_method_learns_one_batch_2d(check_method, smooth_volume, name):
    method = build(name)
    first, last = check_method(method, two_views(smooth_volume), SMALL[name][2])
    # MoCo's queue fills with past keys of these very images, which act as negatives: the loss falls less
    assert last < first - (0.1 if name == "simsiam" else 1.0)


@pytest.mark.parametrize("name", ["simclr", "byol", "vicreg"])
def test_two_view_method_3d_contract(check_method, smooth_volume, name):
    method = build(name, spatial_dims=3)
    check_method(method, two_views(smooth_volume, 3, batch=2), SMALL[name][2], steps=1)


@pytest.mark.parametrize("name", ["moco", "byol"])
def test_target_network_gets_no_gradient_and_follows_by_momentum(smooth_volume, name):
    method = build(name)
    assert method.momentum == {"moco": 0.999, "byol": 0.996}[name]
    method(two_views(smooth_volume))["loss"].backward()
    targets = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in targets)
    with torch.no_grad():  # an optimiser step would move the online network; do it by hand
        for p in method.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = [*method.encoder.parameters(), *method.projector.parameters()]
    before = [p.clone() for p in targets]
    buffers = {k: v.clone() for k, v in method.target_encoder.state_dict().items() if "running" in k}
    method.momentum_update()
    m = method.momentum
    for t, t0, o in zip(targets, before, online, strict=True):
        torch.testing.assert_close(t, m * t0 + (1 - m) * o)
    method.momentum_update(0.0)  # m = 0 copies the online network
    for t, o in zip(targets, online, strict=True):
        torch.testing.assert_close(t, o)
    assert all(torch.equal(v, method.target_encoder.state_dict()[k]) for k, v in buffers.items())


def test_moco_queue_fills_with_normalised_keys_in_training_only(smooth_volume):
    method = build("moco", queue_size=6)
    batch = two_views(smooth_volume)
    keys = F.normalize(method.target_project(batch["view_1"]), dim=1)
    method(batch)
    assert int(method.loss.queue.pointer) == 4
    torch.testing.assert_close(method.loss.queue.keys[:4], keys)
    method(batch)
    assert int(method.loss.queue.pointer) == 2  # wrapped around: 8 keys in a ring of 6
    torch.testing.assert_close(method.loss.queue.keys[:2], keys[2:])
    queued = method.loss.queue.keys.clone()
    method.eval()(batch)
    assert torch.equal(method.loss.queue.keys, queued) and int(method.loss.queue.pointer) == 2


def test_moco_loss_is_infonce_of_query_against_key_and_queue(smooth_volume):
    method = build("moco", queue_size=16).eval()
    batch = two_views(smooth_volume)
    q = F.normalize(method.project(batch["view_0"]), dim=1)
    k = F.normalize(method.target_project(batch["view_1"]), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ method.loss.queue.keys.T], dim=1) / 0.2
    torch.testing.assert_close(method(batch)["loss"], F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)))


def test_moco_fill_queue_enqueues_momentum_keys_and_trains_nothing(smooth_volume):
    method = build("moco", queue_size=6)
    batch = two_views(smooth_volume)
    keys = F.normalize(method.target_project(batch["view_1"]), dim=1)
    weights = {k: v.clone() for k, v in method.named_parameters()}
    method.fill_queue(batch)
    assert int(method.loss.queue.pointer) == 4
    torch.testing.assert_close(method.loss.queue.keys[:4], keys)
    assert all(torch.equal(v, dict(method.named_parameters())[k]) for k, v in weights.items())


def test_moco_learns_to_tell_images_apart_from_a_warm_queue(smooth_volume):
    """32 images in 4 batches of 8, K = 16: the queue holds the keys of the two previous batches, so every
    negative is another image. Filled with real keys first, the loss starts at chance, log(K + 1) (random
    unit keys would be easy negatives and start it far lower), and must fall well below it with the key
    encoder following by momentum (m = 0.99: a fifth of its initialisation is gone after 24 steps)."""
    images = torch.stack([smooth_volume((16, 16), seed) for seed in range(32)])
    batches = [{"view_0": x * 0.9 + 0.05, "view_1": x.flip(-1)} for x in images.split(8)]
    method = build("moco", queue_size=16, momentum=0.99, min_input_size=16)
    for batch in batches[2:]:
        method.fill_queue(batch)
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for step in range(24):
        loss = method(batches[step % 4])["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        method.momentum_update()
        losses.append(loss.item())
    chance = math.log(16 + 1)
    assert abs(losses[0] - chance) < 0.5
    assert sum(losses[-4:]) / 4 < chance - 1.5


def test_vicreg_total_is_the_weighted_sum_of_its_terms(smooth_volume):
    method = build("vicreg", invariance_weight=2.0, variance_weight=3.0, covariance_weight=0.5)
    out = method(two_views(smooth_volume))
    expected = 2.0 * out["loss/invariance"] + 3.0 * out["loss/variance"] + 0.5 * out["loss/covariance"]
    torch.testing.assert_close(out["loss"], expected)
    assert out["loss/variance"] > 0  # a fresh expander's features do not have unit standard deviation


def test_view_keys_and_errors(smooth_volume):
    batch = two_views(smooth_volume)
    method = build("simclr", view_keys=("a", "b"))
    assert method.batch_keys() == {"a": "MultiViewd (the first view)", "b": "MultiViewd (the second view)"}
    assert torch.isfinite(method({"a": batch["view_0"], "b": batch["view_1"]})["loss"])
    with pytest.raises(ValueError, match=r"lacks 'a' \(written by MultiViewd"):
        method(batch)
    with pytest.raises(ValueError, match=r"views 'a' and 'b' must have one shape.*\(4, 1, 32, 32\) and \(4, 1, 48, 32"):
        method({"a": batch["view_0"], "b": torch.rand(4, 1, 48, 32)})
    with pytest.raises(ValueError, match="view_keys must name two batch keys"):
        build("simclr", view_keys="view_")
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        build("byol", momentum=1.5)


@pytest.mark.parametrize("name", ["simclr", "vicreg"])
def test_a_training_batch_of_one_image_is_refused_clearly(smooth_volume, name):
    batch = two_views(smooth_volume)
    method = build(name)
    single = {key: value[:1] for key, value in batch.items()}
    with pytest.raises(ValueError, match="needs at least 2 images per process.*got 1"):
        method(single)
    method.eval()  # the check is for training only: evaluation may embed single images
    assert method.project(single["view_0"]).shape[0] == 1
