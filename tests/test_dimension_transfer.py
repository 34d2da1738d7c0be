"""Cross-modality transfer: a 3D CT export on MRI volumes (3D -> 3D), collapsed to a 2D encoder (CT -> X-ray),
and adapted from grey to RGB input (CT -> histology)."""

import numpy as np
import pytest
import torch
from torch import nn

from medssl3d.data.synthetic import synth_mri
from medssl3d.dimension_transfer import adapt_in_channels, collapse_export_to_2d
from medssl3d.engine import export_encoder, load_encoder_export, read_encoder_export
from medssl3d.evaluation import fine_tune_classifier
from medssl3d.networks import build_encoder
from medssl3d.transfer import build_classifier

TOLERANCE = 1e-5  # float32 rounding, relative to the largest activation


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ct_export(tmp_path_factory):
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", 3, 1)
    return export_encoder(encoder, tmp_path_factory.mktemp("ct") / "encoder.pt", patch_size=[32, 32, 16],
                          spacing=[1.0, 1.0, 2.0], orientation="RAS", intensity_window=[-1000, 1000], method="Genesis")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def features(encoder, x):
    with torch.no_grad():
        return encoder.eval()(x)


def test_center_collapse_equals_3d_encoder_on_one_slice(ct_export, tmp_path):
    """Exact at every layer: on a depth-1 input each 3D kernel meets only its centre depth tap."""
    encoder_3d, _ = load_encoder_export(ct_export)
    encoder_2d, metadata = load_encoder_export(collapse_export_to_2d(ct_export, tmp_path / "2d.pt", "center"), 2, 1)
    assert metadata["patch_size"] == [32, 32] and metadata["spacing"] == [1.0, 1.0]
    assert metadata["orientation"] is None and metadata["method"] == "Genesis"
    image = torch.rand(2, 1, 40, 40)
    for flat, volume in zip(features(encoder_2d, image), features(encoder_3d, image[..., None])):
        assert relative_error(volume[..., 0], flat) < TOLERANCE


def test_sum_collapse_matches_depth_constant_volume_inside_the_receptive_field(ct_export, tmp_path):
    """A 2D image repeated along depth: the 3D feature maps equal the 2D ones at depth positions whose receptive
    field lies inside the volume (the centre of layer2 on a depth-64 volume); near a depth border the zero
    padding makes them differ; the pooled embeddings of the deepest map are close, not equal."""
    encoder_3d, _ = load_encoder_export(ct_export)
    encoder_2d, _ = load_encoder_export(collapse_export_to_2d(ct_export, tmp_path / "2d.pt", "sum"))
    image = torch.rand(2, 1, 32, 32)
    flat = features(encoder_2d, image)
    volume = features(encoder_3d, image[..., None].expand(-1, -1, -1, -1, 64).contiguous())
    for level in (0, 1, 2):  # stem, layer1, layer2: depth 32, 16, 8
        depth = volume[level].shape[-1]
        assert relative_error(volume[level][..., depth // 2], flat[level]) < TOLERANCE
        assert relative_error(volume[level][..., 0], flat[level]) > 1e-2  # the border sees the zero padding
    similarity = nn.functional.cosine_similarity(encoder_2d.pool(flat[-1]), encoder_3d.pool(volume[-1]))
    assert similarity.min() > 0.9


def test_sum_collapse_is_exact_everywhere_with_circular_padding(ct_export, tmp_path):
    """With circular padding (no depth border) a depth-constant volume stays depth-constant through every
    layer, so the whole 3D encoder equals the collapsed 2D one, embedding included: this checks that every
    kernel of the network, shortcuts included, was collapsed by summing over depth."""
    encoder_3d, _ = load_encoder_export(ct_export)
    encoder_2d, _ = load_encoder_export(collapse_export_to_2d(ct_export, tmp_path / "2d.pt", "sum"))
    for module in (*encoder_3d.modules(), *encoder_2d.modules()):
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            module.padding_mode = "circular"
    image = torch.rand(2, 1, 32, 32)
    flat = features(encoder_2d, image)
    volume = features(encoder_3d, image[..., None].expand(-1, -1, -1, -1, 8).contiguous())
    for a, b in zip(volume, flat):
        assert relative_error(a, b[..., None].expand_as(a)) < TOLERANCE


def test_collapse_rejects_bad_mode_and_2d_export(ct_export, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of sum, center"):
        collapse_export_to_2d(ct_export, tmp_path / "x.pt", "mean")
    flat = collapse_export_to_2d(ct_export, tmp_path / "2d.pt")
    with pytest.raises(ValueError, match="is 2D; only a 3D export"):
        collapse_export_to_2d(flat, tmp_path / "x.pt")


def one_training_step(model, images, labels):
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    fine_tune_classifier(model, images, labels, epochs=1, batch_size=len(images), lr=1e-2)
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("head.") for k in changed)
    with torch.no_grad():
        assert model.eval()(images).shape == (len(images), 2)


def test_ct_export_fine_tunes_on_mri_volumes(ct_export):
    """CT -> MRI (3D -> 3D): the CT encoder loads whole into a classifier that trains on MRI volumes."""
    rng = np.random.default_rng(0)
    phantoms = [synth_mri((32, 32, 32), (1.0, 1.0, 1.0), rng, lesion=bool(i % 2)) for i in range(4)]
    images = torch.stack([torch.as_tensor(p.image, dtype=torch.float32)[None] for p in phantoms])
    images = (images - images.mean()) / images.std()
    model = build_classifier(2, pretrained_encoder=ct_export)
    assert str(model.transfer_report).startswith("loaded") and not model.transfer_report.missing
    one_training_step(model, images, torch.tensor([int(p.has_lesion) for p in phantoms]))


def test_collapsed_export_builds_a_2d_classifier_that_trains(ct_export, tmp_path):
    """CT -> X-ray (3D -> 2D)."""
    model = build_classifier(2, pretrained_encoder=collapse_export_to_2d(ct_export, tmp_path / "2d.pt"))
    assert model.encoder.spatial_dims == 2 and not model.transfer_report.missing
    one_training_step(model, torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]))


def test_grey_encoder_adapted_to_rgb_and_back_keeps_the_embedding(ct_export, tmp_path):
    """CT -> histology: a grey image replicated to RGB gives the grey encoder's embedding, and back."""
    grey_2d = collapse_export_to_2d(ct_export, tmp_path / "2d.pt")
    rgb = adapt_in_channels(grey_2d, tmp_path / "rgb.pt", 3)
    encoder_grey, _ = load_encoder_export(grey_2d)
    encoder_rgb, metadata = load_encoder_export(rgb, 2, 3)
    assert metadata["patch_size"] == [32, 32]
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        reference = encoder_grey.eval().embed(image)
        assert relative_error(encoder_rgb.eval().embed(image.expand(-1, 3, -1, -1)), reference) < TOLERANCE
        encoder_back, _ = load_encoder_export(adapt_in_channels(rgb, tmp_path / "grey.pt", 1), 2, 1)
        assert relative_error(encoder_back.eval().embed(image), reference) < TOLERANCE
    state, _ = read_encoder_export(rgb)
    assert state["conv1.weight"].shape[1] == 3
    with pytest.raises(ValueError, match="it can go to 1 channel or stay at 3, not to 2"):
        adapt_in_channels(rgb, tmp_path / "two.pt", 2)
