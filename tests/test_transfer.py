"""Encoder export -> classifier / FlexibleUNet: exact features, report, metadata checks, freezing, LR groups."""

import pytest
import torch
from monai.networks.nets import FlexibleUNet
from torch import nn

from medssl3d.engine import export_encoder
from medssl3d.networks import build_encoder
from medssl3d.transfer import (
    EncoderClassifier,
    TransferReport,
    build_classifier,
    build_segmenter,
    encoder_stages,
    freeze_encoder,
    load_pretrained_encoder,
    parameter_groups,
)


def _pretrained(name="resnet10", spatial_dims=3, in_channels=1, seed=0):
    """An encoder whose weights and BN statistics differ from any fresh initialisation."""
    torch.manual_seed(seed)
    encoder = build_encoder(name, spatial_dims, in_channels)
    with torch.no_grad():
        for t in (*encoder.parameters(), *(b for b in encoder.buffers() if b.is_floating_point())):
            t.add_(0.05 * torch.randn_like(t))
        for key, buffer in encoder.named_buffers():
            if key.endswith("running_var"):
                buffer.abs_()
    return encoder.eval()


@pytest.fixture(scope="module")
def export3d(tmp_path_factory):
    encoder = _pretrained()
    path = export_encoder(encoder, tmp_path_factory.mktemp("exports") / "enc3d.pt", patch_size=[32, 32, 32])
    return encoder, path


@pytest.fixture(scope="module")
def export2d(tmp_path_factory):
    encoder = _pretrained(spatial_dims=2, in_channels=3, seed=1)
    return encoder, export_encoder(encoder, tmp_path_factory.mktemp("exports") / "enc2d.pt")


@pytest.mark.parametrize("which, shape", [("export3d", (2, 1, 32, 32, 32)), ("export2d", (2, 3, 64, 64))])
def test_classifier_reproduces_exported_features(request, which, shape):
    encoder, path = request.getfixturevalue(which)
    model = build_classifier(3, pretrained_encoder=path).eval()
    assert isinstance(model, EncoderClassifier)
    assert model.encoder.spatial_dims == len(shape) - 2 and model.encoder.in_channels == shape[1]
    x = torch.randn(*shape)
    with torch.no_grad():
        for a, b in zip(model.encoder(x), encoder(x), strict=True):
            assert torch.equal(a, b)
        assert model(x).shape == (2, 3)
        scratch = build_classifier(3, "resnet10", len(shape) - 2, shape[1]).eval()
        assert not torch.allclose(scratch.encoder.embed(x), encoder.embed(x))


def test_classifier_head_reads_the_pooled_maps_of_its_last_stages(export3d):
    encoder, path = export3d
    x = torch.randn(2, 1, 33, 32, 31)  # odd sides: every stage's map has its own shape
    last = build_classifier(2, pretrained_encoder=path).eval()
    every = build_classifier(2, pretrained_encoder=path, pooled_stages=5).eval()
    two = build_classifier(2, pretrained_encoder=path, pooled_stages=2).eval()
    with torch.no_grad():
        maps = encoder(x)
        pooled = [m.mean(dim=(2, 3, 4)) for m in maps]
        assert torch.equal(last.embed(x), encoder.embed(x)) and last.head.in_dim == 512
        assert torch.allclose(every.embed(x), torch.cat(pooled, dim=1))
        assert torch.allclose(two.embed(x), torch.cat(pooled[-2:], dim=1))
        assert (every.head.in_dim, two.head.in_dim) == (64 + 64 + 128 + 256 + 512, 256 + 512)
        assert every(x).shape == (2, 2)
    with pytest.raises(ValueError, match=r"pooled_stages must be an int in \[1, 5\]"):
        build_classifier(2, pretrained_encoder=path, pooled_stages=6)
    with pytest.raises(ValueError, match="pooled_stages"):
        build_classifier(2, pretrained_encoder=path, pooled_stages=0)


def test_reset_last_stages_reinitialises_only_those_stages(export3d):
    encoder, path = export3d
    torch.manual_seed(0)
    reset = build_classifier(2, pretrained_encoder=path, reset_last_stages=1).encoder.state_dict()
    kept = encoder.state_dict()
    changed = {key.split(".")[0] for key in kept if not torch.equal(kept[key], reset[key])}
    assert changed == {"layer4"}  # the pretrained stem and layer1-3 as exported
    assert torch.equal(reset["layer4.0.bn1.running_var"], torch.ones(512))
    assert torch.equal(reset["layer4.0.bn1.weight"], torch.ones(512))
    assert reset["layer4.0.bn1.num_batches_tracked"] == 0
    std = reset["layer4.0.conv1.weight"].std().item()  # He normal, fan-out: sqrt(2 / (512 * 3 ** 3))
    assert std == pytest.approx((2 / (512 * 27)) ** 0.5, rel=0.05)
    torch.manual_seed(0)
    again = build_classifier(2, pretrained_encoder=path, reset_last_stages=1).encoder.state_dict()
    assert all(torch.equal(reset[key], again[key]) for key in reset)  # drawn from torch's seeded generator
    torch.manual_seed(0)
    two = build_classifier(2, pretrained_encoder=path, reset_last_stages=2).encoder.state_dict()
    assert {key.split(".")[0] for key in kept if not torch.equal(kept[key], two[key])} == {"layer3", "layer4"}
    with pytest.raises(ValueError, match=r"count must be an int in \[0, 5\]"):
        build_classifier(2, pretrained_encoder=path, reset_last_stages=6)


def test_report_counts_every_tensor(export3d, capsys):
    encoder, path = export3d
    model = build_classifier(2, pretrained_encoder=path)
    report = model.transfer_report
    assert isinstance(report, TransferReport)
    assert sorted(report.loaded) == sorted(encoder.state_dict()) and not report.missing and not report.unexpected
    assert str(report) == f"loaded {len(encoder.state_dict())} tensors, 0 missing, 0 unexpected"
    assert str(report) in capsys.readouterr().out
    assert build_classifier(2, "resnet10").transfer_report is None


def test_segmenter_encoder_reproduces_exported_features(export3d):
    encoder, path = export3d
    net = build_segmenter(3, pretrained_encoder=path, decoder_channels=(32, 16, 16, 8, 8)).eval()
    assert isinstance(net, FlexibleUNet)
    assert net.transfer_report.missing == [] and len(net.transfer_report.loaded) == len(encoder.state_dict())
    x = torch.randn(1, 1, 32, 32, 64)
    with torch.no_grad():
        for a, b in zip(net.encoder(x), encoder(x), strict=True):
            assert torch.equal(a, b)
        assert net(x).shape == (1, 3, 32, 32, 64)
        with pytest.raises(ValueError, match="multiple of 32"):
            net(torch.randn(1, 1, 32, 32, 16))


def test_mismatched_export_names_the_file(export3d, export2d):
    _, path3d = export3d
    _, path2d = export2d
    for kwargs in ({"spatial_dims": 2}, {"in_channels": 3}, {"encoder": "resnet18"}):
        with pytest.raises(ValueError, match=r"enc3d\.pt"):
            build_classifier(2, pretrained_encoder=path3d, **kwargs)
    with pytest.raises(ValueError, match=r"enc2d\.pt.*spatial_dims"):
        load_pretrained_encoder(build_encoder("resnet10", 3, 3), path2d)
    with pytest.raises(ValueError, match=r"enc3d\.pt.*in_channels"):
        load_pretrained_encoder(build_encoder("resnet10", 3, 2), path3d)
    with pytest.raises(ValueError, match=r"enc3d\.pt.*architecture"):
        load_pretrained_encoder(build_encoder("resnet18", 3, 1), path3d)
    with pytest.raises(ValueError, match=r"enc2d\.pt.*spatial_dims"):
        build_segmenter(2, spatial_dims=3, pretrained_encoder=path2d)


def test_non_strict_architecture_loads_what_fits(export3d):
    encoder, path = export3d
    target = build_encoder("resnet18", 3, 1)
    report = load_pretrained_encoder(target, path, strict_architecture=False)
    assert "conv1.weight" in report.loaded and torch.equal(target.conv1.weight, encoder.conv1.weight)
    assert "layer1.1.conv1.weight" in report.missing  # resnet18 has two blocks per layer, resnet10 one
    assert len(report.loaded) + len(report.missing) == len(target.state_dict())
    assert len(report.loaded) + len(report.unexpected) == len(encoder.state_dict())


def _train_steps(model, x, y, steps=2):
    optimizer = torch.optim.SGD(parameter_groups(model, lr=0.1), lr=0.1)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_frozen_mode_keeps_encoder_and_bn_statistics(export3d):
    _, path = export3d
    model = build_classifier(2, pretrained_encoder=path, mode="frozen")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert model.training and model.head.training
    assert not any(m.training for m in model.encoder.modules() if isinstance(m, nn.BatchNorm3d))
    encoder_before, head_before = _snapshot(model.encoder), _snapshot(model.head)
    _train_steps(model, torch.randn(4, 1, 32, 32, 32), torch.tensor([0, 1, 0, 1]))
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())


def test_partial_mode_freezes_the_first_stages(export3d):
    _, path = export3d
    model = build_classifier(2, pretrained_encoder=path, mode="partial", trainable_stages=2)
    trainable = {n.split(".")[0] for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    before = _snapshot(model.encoder)
    _train_steps(model, torch.randn(4, 1, 32, 32, 32), torch.tensor([0, 1, 0, 1]))
    after = model.encoder.state_dict()
    changed = {k.split(".")[0] for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {"layer3", "layer4"}  # incl. their BN statistics; stem..layer2 statistics untouched
    with pytest.raises(ValueError, match="trainable_stages"):
        build_classifier(2, "resnet10", mode="partial", trainable_stages=6)
    with pytest.raises(ValueError, match="mode"):
        build_classifier(2, "resnet10", mode="linear")


def test_segmenter_partial_mode_keeps_frozen_stages_in_eval(export3d):
    _, path = export3d
    net = build_segmenter(2, pretrained_encoder=path, mode="partial", trainable_stages=1)
    net.train()
    assert not net.encoder.layer3.training and net.encoder.layer4.training and net.decoder.training
    frozen = [n for n, p in net.encoder.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith("layer4") for n in frozen)


@pytest.mark.parametrize("name, spatial_dims", [("resnet10", 3), ("densenet121", 2)])
def test_stages_cover_every_encoder_parameter(name, spatial_dims):
    encoder = build_encoder(name, spatial_dims, 1)
    stages = encoder_stages(encoder)
    assert len(stages) == len(encoder.feature_strides) == 5
    covered = {f"{m}.{p}" for stage in stages for m in stage for p, _ in encoder.get_submodule(m).named_parameters()}
    assert covered == {n for n, _ in encoder.named_parameters()}
    frozen = freeze_encoder(encoder, trainable_stages=0)
    assert not any(p.requires_grad for p in encoder.parameters()) and len(frozen) == sum(map(len, stages))


def test_parameter_groups_two_learning_rates(export3d):
    _, path = export3d
    model = build_classifier(2, pretrained_encoder=path)
    groups = parameter_groups(model, lr=1e-3, encoder_lr=1e-4, weight_decay=0.01)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("encoder", 1e-4, 0.01), ("head", 1e-3, 0.01)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-3]
    assert [g["lr"] for g in parameter_groups(model, lr=1e-3)] == [1e-3, 1e-3]
    frozen = build_classifier(2, pretrained_encoder=path, mode="frozen")
    (head,) = parameter_groups(frozen, lr=1e-3, encoder_lr=1e-4)
    assert head["name"] == "head" and len(head["params"]) == len(list(frozen.head.parameters()))
    with pytest.raises(ValueError, match="encoder"):
        parameter_groups(nn.Linear(2, 2), lr=1e-3)
