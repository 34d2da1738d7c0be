import pytest
import torch

from medssl3d.encoder_export import (
    export_encoder,
    load_encoder_export,
    read_encoder_export,
)
from medssl3d.networks import build_encoder


@pytest.mark.parametrize("spatial_dims, shape", [(3, (2, 1, 16, 16, 16)), (2, (2, 1, 32, 32))])
def test_loaded_export_reproduces_the_features(tmp_path, spatial_dims, shape):
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", spatial_dims, 1, conv1_t_stride=1).eval()
    path = export_encoder(encoder, tmp_path / "encoder.pt", method="Test", spacing=[1.0] * spatial_dims,
                          encoder_kwargs={"conv1_t_stride": 1})
    loaded, metadata = load_encoder_export(path, spatial_dims, 1, "resnet10")
    x = torch.rand(shape)
    for a, b in zip(loaded(x), encoder(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert metadata["embedding_dim"] == 512 and metadata["feature_strides"] == [1, 2, 4, 8, 16]
    assert metadata["method"] == "Test" and metadata["orientation"] is None and metadata["medssl3d_version"]


def test_mismatches_are_refused_with_the_file_named(tmp_path):
    path = export_encoder(build_encoder("resnet10", 3, 1), tmp_path / "enc.pt")
    for kwargs, message in (
        ({"expected_spatial_dims": 2}, r"enc.pt': spatial_dims is 3 but 2 is expected"),
        ({"expected_in_channels": 3}, r"enc.pt': in_channels is 1 but 3 is expected"),
        ({"expected_architecture": "resnet18"}, r"enc.pt': architecture is 'resnet10' but 'resnet18' is expected"),
    ):
        with pytest.raises(ValueError, match=message):
            load_encoder_export(path, **kwargs)


def test_forgotten_encoder_kwargs_and_bad_files_are_refused(tmp_path):
    path = export_encoder(build_encoder("resnet10", 3, 1, conv1_t_stride=1), tmp_path / "enc.pt")  # kwargs not given
    with pytest.raises(ValueError, match=r"feature strides \[2, 4, 8, 16, 32\], the export \[1, 2, 4, 8, 16\]"):
        load_encoder_export(path)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt' cannot be read: the file is truncated, corrupt"):
        read_encoder_export(tmp_path / "bad.pt")
    torch.save({"state_dict": {}, "metadata": {"format": "other"}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="export format 'other'"):
        read_encoder_export(tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"unknown metadata keys \['window'\]"):
        export_encoder(build_encoder("resnet10", 3, 1), tmp_path / "x.pt", window=[0, 1])


class _Marker:
    """Unpickling it would create the file at ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    from medssl3d.engine.checkpoint import load_checkpoint

    marker = tmp_path / "code_ran"
    state_dict = build_encoder("resnet10", 2, 1).state_dict()
    torch.save({"state_dict": state_dict, "metadata": {"format": "x", "spacing": _Marker(marker)}}, tmp_path / "e.pt")
    with pytest.raises(ValueError, match=r"Encoder export '.*e.pt' holds a pickled Python object \(io.open\) "
                                         r"that safe loading \(weights_only=True\) refuses"):
        read_encoder_export(tmp_path / "e.pt")
    torch.save({"format": "medssl3d-training-checkpoint-v1", "model": _Marker(marker)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"Training checkpoint '.*c.pt' holds a pickled Python object"):
        load_checkpoint(tmp_path / "c.pt")
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"Encoder export '.*missing.pt' does not exist"):
        read_encoder_export(tmp_path / "missing.pt")
