"""The caching policy of bundle datasets: size estimate from headers, the choice against a RAM budget, and a
disk cache that is reused by identical settings and never by changed ones."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, RandSpatialCropd, Spacingd

from medssl3d.data.caching import GB, cached_dataset, choose_policy, estimate_cached_bytes, ram_budget_bytes
from medssl3d.errors import InputError


def _volume(path, shape=(40, 30, 20), spacing=(0.7, 0.7, 2.5)):
    data = np.full(shape, -1024, np.int16)
    data[5:-5, 5:-5, 2:-2] = 40
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return str(path)


def _chain(pixdim=(1.0, 1.0, 2.0)):
    return Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                    Spacingd("image", pixdim=list(pixdim)), EnsureTyped("image", dtype=torch.float32),
                    RandSpatialCropd("image", roi_size=[8, 8, 8])])


def test_estimate_follows_header_spacing_and_counts_every_file(tmp_path):
    item = {"image": _volume(tmp_path / "a.nii.gz"), "label": _volume(tmp_path / "a_seg.nii.gz"), "class": 1}
    # 40 x 0.7 / 1 -> 28, 30 x 0.7 -> 21, 20 x 2.5 / 2 -> 25 voxels, float32, image and label
    assert estimate_cached_bytes([item], spacing=[1, 1, 2]) == 2 * 28 * 21 * 25 * 4
    assert estimate_cached_bytes([item]) == 2 * 40 * 30 * 20 * 4  # no resampling: the stored grid
    assert estimate_cached_bytes([item] * 3, spatial_size=[8, 8, 8]) == 3 * 2 * 8**3 * 4  # resized chains
    # the estimate matches what the chain really produces
    image = Compose(_chain().transforms[:-1])({"image": item["image"]})["image"]  # without the random crop
    assert image.numel() * 4 == estimate_cached_bytes([{"image": item["image"]}], spacing=[1, 1, 2])


def test_policy_choice():
    assert choose_policy(needed=5 * GB, budget=8 * GB, cache_dir="/c") == ("ram", 1.0)
    assert choose_policy(needed=50 * GB, budget=8 * GB, cache_dir="/c") == ("disk", 0.0)
    assert choose_policy(needed=16 * GB, budget=8 * GB, cache_dir=None) == ("ram", 0.5)  # the part that fits
    assert choose_policy(needed=1, budget=0, cache_dir="/c", policy="ram") == ("ram", 1.0)  # forced
    assert choose_policy(needed=1, budget=8 * GB, cache_dir="/c", policy="disk") == ("disk", 0.0)
    with pytest.raises(InputError, match="needs a cache_dir"):
        choose_policy(needed=1, budget=1, cache_dir=None, policy="disk")
    with pytest.raises(InputError, match="'memory' is not one of auto, ram, disk, none"):
        choose_policy(needed=1, budget=1, cache_dir=None, policy="memory")


def test_ram_budget_is_shared_by_the_processes_of_a_node(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    budget, origin = ram_budget_bytes(8)
    assert budget == 2 * GB and "cache_ram_gb 8" in origin and "4 processes" in origin
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    budget, origin = ram_budget_bytes(None)
    assert 0 < budget and origin.startswith("half of the")
    with pytest.raises(InputError, match="cache_ram_gb is -1"):
        ram_budget_bytes(-1)


def test_bundle_dataset_follows_the_budget(tmp_path, capsys):
    data = [{"image": _volume(tmp_path / f"v{i}.nii.gz")} for i in range(4)]  # 4 x 58800 bytes
    small = cached_dataset(data, _chain(), spacing=[1, 1, 2], ram_budget_gb=1, cache_dir=tmp_path / "cache",
                           name="training")
    assert isinstance(small, CacheDataset) and len(small._cache) == 4
    assert "training: caching 4 of 4 items in RAM" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()

    half = cached_dataset(data, _chain(), spacing=[1, 1, 2], ram_budget_gb=2 * 58800 / GB, num_workers=0)
    assert isinstance(half, CacheDataset) and len(half._cache) == 2
    assert "caching 2 of 4 items in RAM (CacheDataset), the rest is read every epoch" in capsys.readouterr().out

    large = cached_dataset(data, _chain(), spacing=[1, 1, 2], ram_budget_gb=58800 / GB, cache_dir=tmp_path / "cache")
    assert isinstance(large, PersistentDataset)
    assert "caching on disk under" in capsys.readouterr().out
    assert isinstance(cached_dataset(data, _chain(), cache_rate=0), Dataset)


def test_disk_cache_reused_by_same_settings_only(tmp_path):
    data = [{"image": _volume(tmp_path / "v.nii.gz")}]
    first = cached_dataset(data, _chain(), policy="disk", cache_dir=tmp_path / "cache")[0]["image"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = cached_dataset(data, _chain(), policy="disk", cache_dir=tmp_path / "cache")  # a new run, same chain
    assert again[0]["image"].shape == first.shape and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert "pixdim" in again[0]["image"].meta  # metadata kept, as in RAM
    coarse = cached_dataset(data, _chain(pixdim=(2.0, 2.0, 4.0)), policy="disk", cache_dir=tmp_path / "cache")
    assert coarse[0]["image"].shape == first.shape  # crops of 8^3 from the coarser volume
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # changed spacing: its own cache file
