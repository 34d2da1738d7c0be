"""RetinaNet on the encoder contract: losses and detections in 2D and 3D, transfer of an encoder export
(report, frozen/partial modes, encoder learning rate) and no torchvision anywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from medssl3d.detection.network import EncoderFPN, build_detector
from medssl3d.engine import export_encoder
from medssl3d.networks import build_encoder
from medssl3d.transfer import parameter_groups


def _targets(dims: int) -> list[dict]:
    box = torch.tensor([[6.0] * dims + [18.0] * dims])
    return [{"box": box, "label": torch.tensor([0])},
            {"box": torch.zeros(0, 2 * dims), "label": torch.zeros(0, dtype=torch.long)}]  # a negative


@pytest.mark.parametrize("dims,size", [(2, 64), (3, 32)])
def test_losses_train_and_detections_have_the_detector_keys(dims, size):
    torch.manual_seed(0)
    detector = build_detector(1, "resnet10", dims, 1, score_thresh=0.0)
    images = torch.rand(2, 1, *(size,) * dims)
    detector.train()
    losses = detector(images, _targets(dims))
    assert set(losses) == {"classification", "box_regression"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert detector.encoder.conv1.weight.grad.abs().sum() > 0  # the loss reaches the encoder through the pyramid
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2
    for d in detections:
        assert d["box"].shape[1] == 2 * dims and len(d["box"]) == len(d["label"]) == len(d["label_scores"]) > 0


def test_feature_pyramid_follows_the_chosen_levels():
    encoder = build_encoder("resnet10", 3, 1)
    fpn = EncoderFPN(encoder, levels=(2, 3), out_channels=16).eval()
    maps = fpn(torch.zeros(1, 1, 32, 32, 32))
    assert fpn.strides == (8, 16) and [tuple(m.shape) for m in maps] == [(1, 16, 4, 4, 4), (1, 16, 2, 2, 2)]
    with pytest.raises(ValueError, match="increasing indices"):
        EncoderFPN(encoder, levels=(3, 2))


def test_export_loads_into_the_backbone_and_modes_freeze_it(tmp_path):
    encoder = build_encoder("resnet10", 2, 1)
    path = export_encoder(encoder, tmp_path / "encoder.pt", patch_size=[64, 64])
    detector = build_detector(1, spatial_dims=2, pretrained_encoder=path, mode="frozen")
    report = detector.transfer_report
    assert len(report.loaded) == len(encoder.state_dict()) and not report.missing and not report.unexpected
    for name, value in encoder.state_dict().items():
        assert torch.equal(detector.encoder.state_dict()[name], value)
    detector.train()
    assert not any(p.requires_grad for p in detector.encoder.parameters())
    assert not detector.encoder.bn1.training and detector.network.feature_extractor.fpn.training
    groups = parameter_groups(detector, lr=1e-3, encoder_lr=1e-4)
    assert [g["name"] for g in groups] == ["head"]  # a frozen encoder has nothing to train

    partial = build_detector(1, spatial_dims=2, pretrained_encoder=path, mode="partial", trainable_stages=1)
    trainable = {n.split(".")[0] for n, p in partial.encoder.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    groups = {g["name"]: g for g in parameter_groups(partial, lr=1e-3, encoder_lr=1e-4)}
    assert groups["encoder"]["lr"] == 1e-4 and groups["head"]["lr"] == 1e-3
    with pytest.raises(ValueError, match="spatial_dims is 2 but 3 was asked for"):
        build_detector(1, spatial_dims=3, pretrained_encoder=path)


def test_preparation_mismatch_with_the_export_is_warned_once_naming_both(tmp_path):
    prepared = {"modality": "CT", "intensity_window": [-1024, 300], "spacing": [1.5, 1.5, 1.5], "orientation": "RAS"}
    path = export_encoder(build_encoder("resnet10", 3, 1), tmp_path / "encoder.pt", patch_size=[32, 32, 32],
                          modality="CT", intensity_window=[-1000, 1000], spacing=[1.5, 1.5, 1.5], orientation="RAS")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own rule: a given warning text once per place
        for _ in range(2):
            build_detector(1, spatial_dims=3, pretrained_encoder=path, prepared_inputs=prepared)
        build_detector(1, spatial_dims=3, pretrained_encoder=path, prepared_inputs={**prepared,
                                                                                     "intensity_window": [-1000, 1000]})
        build_detector(1, spatial_dims=3, pretrained_encoder=path)  # nothing stated, nothing compared
    messages = [str(w.message) for w in caught if "was pretrained on" in str(w.message)]
    assert messages == [f"{path} was pretrained on CT window [-1000, 1000] at 1.5x1.5x1.5 mm RAS; this run prepares "
                        "CT window [-1024, 300] at 1.5x1.5x1.5 mm RAS (differs in intensity_window); the encoder "
                        "transfers best on inputs prepared as in pretraining."]


def test_no_torchvision_is_imported(tmp_path):
    """Build, train and run 2D and 3D detectors with torchvision made unimportable."""
    script = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torchvision" or name.startswith("torchvision."):
                    raise ImportError("torchvision is blocked")
        sys.meta_path.insert(0, Block())
        import torch
        from medssl3d.detection.network import build_detector
        import medssl3d.detection.engine, medssl3d.detection.metrics, medssl3d.detection.boxes, medssl3d.detection.writer
        torch.manual_seed(0)
        for dims, size in ((2, 64), (3, 32)):
            detector = build_detector(1, "resnet10", dims, 1)
            box = torch.tensor([[6.0] * dims + [18.0] * dims])
            targets = [{"box": box, "label": torch.tensor([0])}] * 2
            losses = detector(torch.rand(2, 1, *(size,) * dims), targets)
            sum(losses.values()).backward()
            detector.eval()
            with torch.no_grad():
                detector(torch.rand(1, 1, *(size,) * dims))
        assert not any(name.split(".")[0] == "torchvision" for name in sys.modules)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
