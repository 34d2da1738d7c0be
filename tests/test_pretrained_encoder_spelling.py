"""``--pretrained_encoder null`` (as the bundle READMEs write it) means "from scratch": the command line passes the
word as a string, which the downstream builders read as ``None``."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medssl3d.detection.network import build_detector
from medssl3d.encoder_export import export_encoder
from medssl3d.networks import build_encoder
from medssl3d.transfer import build_classifier, build_segmenter, pretrained_export

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


@pytest.mark.parametrize("value", [None, "null", "None", "NONE", "", " null "])
def test_the_words_for_nothing_mean_scratch(value):
    assert pretrained_export(value) is None
    model = build_classifier(2, "resnet10", 2, 1, pretrained_encoder=value)
    assert getattr(model, "transfer_report", None) is None
    assert build_segmenter(2, "resnet10", 2, 1, pretrained_encoder=value).transfer_report is None
    detector = build_detector(1, "resnet10", 2, 1, pretrained_encoder=value)
    assert getattr(detector, "transfer_report", None) is None


def test_a_path_is_still_a_path(tmp_path):
    export = export_encoder(build_encoder("resnet10", 2, 1), tmp_path / "encoder.pt", patch_size=[32, 32])
    assert pretrained_export(str(export)) == str(export) and pretrained_export(export) == export
    model = build_classifier(2, pretrained_encoder=str(export))
    assert not model.transfer_report.missing
    with pytest.raises(ValueError, match=r"Encoder export '.*nul' does not exist"):
        build_classifier(2, pretrained_encoder=str(tmp_path / "nul"))


@pytest.mark.parametrize("bundle", ["xray_cls", "seg_ct"])
def test_bundle_network_from_scratch_with_the_readme_spelling(bundle):
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "configs" / "train.yaml")
    parser["pretrained_encoder"] = "null"  # what `--pretrained_encoder null` sets
    parser["encoder"] = "resnet10"
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, torch.nn.Module) and getattr(network, "transfer_report", None) is None
