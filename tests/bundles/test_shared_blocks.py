"""One modality's settings and steps in one place (configs/modality/<m>.yaml, copied into every bundle of that
modality by configs/sync_blocks.py), merge files that do what they say, and handlers wired by id."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
PRETRAINING = ("genesis_ct", "masked_ct", "contrastive_ct", "rubik_ct", "rotation_ct", "multitask_ct")
# (config files merged in order, chain key, the window preset the bundle chooses)
CT_CHAINS = {
    **{name: ([f"bundles/{name}/configs/train.yaml"], "train#preprocessing", "genesis") for name in PRETRAINING},
    "seg_ct": (["bundles/seg_ct/configs/train.yaml"], "validate#preprocessing", "lung"),
    "seg_ct evaluate": (["bundles/seg_ct/configs/train.yaml", "bundles/seg_ct/configs/evaluate.yaml"],
                        "preprocessing", "lung"),
    "seg_ct inference": (["bundles/seg_ct/configs/inference.yaml"], "preprocessing", "lung"),
    "nodule_cls_ct": (["bundles/nodule_cls_ct/configs/train.yaml"], "train#preprocessing", "lung"),
    "nodule_cls_ct inference": (["bundles/nodule_cls_ct/configs/inference.yaml"], "preprocessing", "lung"),
    "reference chain": (["configs/preprocessing/ct.yaml"], "preprocessing", "genesis"),
}
CARRIERS_2D = {"X-ray": ("xray_cls", "contrastive_xray"), "histology": ("histology_cls", "contrastive_histology")}
DOWNSTREAM = ("seg_ct", "nodule_cls_ct", "xray_cls", "histology_cls", "detection_ct", "detection_xray")


def _sync_module():
    spec = importlib.util.spec_from_file_location("sync_blocks", REPO / "configs" / "sync_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chain(root: Path, files: list[str], key: str, extra: list[Path] = ()) -> tuple[ConfigParser, list]:
    parser = ConfigParser(ConfigParser.load_config_files([str(root / f) for f in files] + [str(e) for e in extra]))
    parser["dataset_dir"] = "/nonexistent"  # the chains are built without reading data
    chain = parser.get_parsed_content(key)
    return parser, list(getattr(chain, "transforms", chain))  # a bundle's Compose or the reference chain's list


def _window(steps: list) -> list[float]:
    (scale,) = [step.scaler for step in steps if type(step).__name__ == "ScaleIntensityRanged"]
    assert (scale.b_min, scale.b_max, scale.clip) == (0.0, 1.0, True)
    return [scale.a_min, scale.a_max]


def _spacing(steps: list) -> list[float]:
    (spacing,) = [step for step in steps if type(step).__name__ == "Spacingd"]
    return [float(s) for s in spacing.spacing_transform.pixdim]


def test_every_copy_equals_its_source():
    assert _sync_module().sync(REPO, check=True) == [], "run: python configs/sync_blocks.py"


def test_every_ct_config_carries_the_ct_block():
    carriers = _sync_module().copies(REPO)
    for files, _, _ in CT_CHAINS.values():
        assert carriers.get(REPO / files[0]) == ["CT"], files[0]


@pytest.mark.parametrize("block", sorted(CARRIERS_2D))
def test_every_2d_bundle_carries_its_block_and_runs_it(block):
    carriers = _sync_module().copies(REPO)
    for bundle in CARRIERS_2D[block]:
        path = REPO / "bundles" / bundle / "configs" / "train.yaml"
        assert carriers.get(path) == [block], bundle
        parser = ConfigParser(ConfigParser.load_config_files([str(path)]))
        parser["dataset_dir"] = "/nonexistent"
        steps = parser.get_parsed_content("train#preprocessing").transforms
        shared = parser.get_parsed_content("image_transforms")
        start = [index for index, step in enumerate(steps) if step is shared[0]]
        assert start and list(steps[start[0]:start[0] + len(shared)]) == list(shared), bundle  # in order, together


def test_one_edit_of_the_ct_source_reaches_every_ct_chain(tmp_path):
    for folder in ("configs", *(f"bundles/{b}/configs" for b in (*PRETRAINING, "seg_ct", "nodule_cls_ct"))):
        shutil.copytree(REPO / folder, tmp_path / folder)
    source = tmp_path / "configs" / "modality" / "ct.yaml"
    text = source.read_text()
    assert "  genesis: [-1000, 1000]" in text and "  lung: [-1000, 400]" in text
    source.write_text(text.replace("  genesis: [-1000, 1000]", "  genesis: [-900, 700]")
                      .replace("  lung: [-1000, 400]", "  lung: [-950, 350]"))  # the one edit
    module = _sync_module()
    changed = module.sync(tmp_path)
    assert len(changed) == len({files[0] for files, _, _ in CT_CHAINS.values()})
    assert module.sync(tmp_path, check=True) == []
    new = {"genesis": [-900, 700], "lung": [-950, 350]}
    for name, (files, key, preset) in CT_CHAINS.items():
        parser, steps = _chain(tmp_path, files, key)
        assert _window(steps) == new[preset], name
        assert parser.get_parsed_content("intensity_window") == new[preset], name  # what an export records


def test_the_mri_switch_and_the_mri_reference_chain_share_one_source(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    source = tmp_path / "configs" / "modality" / "mri.yaml"
    text = source.read_text()
    assert "mri_percentiles: [0.5, 99.5]" in text
    source.write_text(text.replace("mri_percentiles: [0.5, 99.5]", "mri_percentiles: [1.0, 99.0]"))  # the one edit
    assert _sync_module().sync(tmp_path) == [tmp_path / "configs" / "preprocessing" / "mri.yaml"]
    _, steps = _chain(tmp_path, ["configs/preprocessing/mri.yaml"], "preprocessing")
    (scale,) = [step.scaler for step in steps if type(step).__name__ == "ScaleIntensityRangePercentilesd"]
    assert (scale.lower, scale.upper) == (1.0, 99.0)
    assert _spacing(steps) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", sorted(CT_CHAINS))
def test_merging_the_unchanged_ct_file_changes_nothing(name):
    files, key, preset = CT_CHAINS[name]
    _, alone = _chain(REPO, files, key)
    _, merged = _chain(REPO, files, key, [REPO / "configs" / "modality" / "ct.yaml"])
    assert [type(s).__name__ for s in merged] == [type(s).__name__ for s in alone]
    assert _window(merged) == _window(alone) == {"genesis": [-1000, 1000], "lung": [-1000, 400]}[preset]
    assert _spacing(merged) == _spacing(alone)


@pytest.mark.parametrize("bundle, preset, pixdim", [("rotation_ct", "genesis", [1.5, 1.5, 1.5]),
                                                     ("seg_ct", "lung", [1.0, 1.0, 2.0])])
def test_a_merged_edited_ct_file_changes_the_window_and_keeps_the_bundles_spacing(tmp_path, bundle, preset, pixdim):
    text = (REPO / "configs" / "modality" / "ct.yaml").read_text()
    edited = tmp_path / "my_ct.yaml"
    edited.write_text(text.replace("  genesis: [-1000, 1000]", "  genesis: [-1000, 600]")
                      .replace("  lung: [-1000, 400]", "  lung: [-1100, 300]"))
    files = [f"bundles/{bundle}/configs/train.yaml"]
    parser, steps = _chain(REPO, files, "train#preprocessing", [edited])
    window = {"genesis": [-1000, 600], "lung": [-1100, 300]}[preset]
    assert _window(steps) == window and parser.get_parsed_content("intensity_window") == window
    assert _spacing(steps) == pixdim  # rotation_ct keeps its isotropic spacing
    edited.write_text(text + "ct_window: mediastinum\n")  # a merge file may also choose the preset
    _, steps = _chain(REPO, files, "train#preprocessing", [edited])
    assert _window(steps) == [-160, 240]


def test_a_window_given_in_hu_instead_of_a_preset():
    parser = ConfigParser(ConfigParser.load_config_files([str(REPO / "bundles/seg_ct/configs/train.yaml")]))
    parser["dataset_dir"] = "/nonexistent"
    parser["ct_window"] = [-500, 500]
    assert _window(parser.get_parsed_content("validate#preprocessing").transforms) == [-500, 500]
    assert parser.get_parsed_content("intensity_window") == [-500, 500]


def test_a_copy_without_its_end_line_is_one_clear_error(tmp_path):
    module = _sync_module()
    shutil.copytree(REPO / "configs" / "modality", tmp_path / "configs" / "modality")
    broken = tmp_path / "bundles" / "mine" / "configs" / "train.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text(f"seed: 0\n{module.begin_marker('CT')}\nmodality: CT\n")
    with pytest.raises(ValueError, match=r"train\.yaml': the CT block has no end line"):
        module.sync(tmp_path)
    assert broken.read_text().endswith("modality: CT\n")  # nothing written


def test_no_bundle_selects_a_handler_by_position():
    positional = re.compile(r"@[\w#]*handlers#\d")
    for path in sorted(REPO.glob("bundles/*/configs/*.yaml")):
        assert not positional.search(path.read_text()), f"{path.relative_to(REPO)}: reference the handler by id"


@pytest.mark.parametrize("bundle", DOWNSTREAM)
def test_the_resume_handler_and_the_validation_handlers_share_one_best_saver(bundle, tmp_path):
    parser = ConfigParser(ConfigParser.load_config_files([str(REPO / f"bundles/{bundle}/configs/train.yaml")]))
    parser.update({"dataset_dir": str(tmp_path), "output_dir": str(tmp_path), "encoder": "resnet10"})
    (resume,) = [h for h in parser["train"]["handlers"] if isinstance(h, dict) and "best_model_saver" in h]
    assert resume["best_model_saver"] == "@validate#best_saver"
    config = parser["validate"]["best_saver"]
    assert config["save_key_metric"] is True and config["key_metric_filename"] == "model.pt"
    saver = parser.get_parsed_content("validate#best_saver")
    assert type(saver).__name__ == "CheckpointSaver"
    handlers = parser.get_parsed_content("validate#handlers")
    assert sum(handler is saver for handler in handlers) == 1
