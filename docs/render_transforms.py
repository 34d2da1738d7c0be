"""Render every pretext transform on synthetic samples into docs/transforms_3d.png and docs/transforms_2d.png.

Run: ``python docs/render_transforms.py``. 3D transforms are applied to a windowed synthetic chest CT and
shown as the middle axial slice (stacks of patches/sub-cubes as a row of slices); 2D view chains are
applied to a synthetic radiograph and a synthetic H&E tile.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from medssl3d.data.synthetic import synth_ct, synth_histology, synth_xray  # noqa: E402
from medssl3d.transforms import (  # noqa: E402
    CLAHE,
    MultiViewd,
    RandGenesisCorruptiond,
    RandIntensityJitterd,
    RandJigsawd,
    RandMaskedPatchesd,
    RandPatchSwapd,
    RandPositionCropd,
    RandRelativePatchLocationd,
    RandRotationPredictiond,
    RandRubikCubed,
    RandSliceDropoutd,
    ct_mri_views_3d,
    histology_views_2d,
    xray_views_2d,
)

DOCS = Path(__file__).resolve().parent


def axial(volume) -> np.ndarray:
    """Middle axial slice of a (C, H, W, D) volume, transposed for display."""
    array = np.asarray(volume)
    return array[0, :, :, array.shape[-1] // 2].T


def row_of(stack) -> np.ndarray:
    """Middle axial slices of a (N, C, H, W, D) stack, side by side with a 1-pixel gap."""
    slices = [np.pad(axial(cube), ((0, 0), (0, 1)), constant_values=1.0) for cube in np.asarray(stack)]
    return np.concatenate(slices, axis=1)


def render_3d(path: Path) -> None:
    hu = synth_ct((96, 96, 48), rng=np.random.default_rng(2), n_nodules=3).image
    image = torch.from_numpy(np.clip((hu[16:80, 16:80, 8:40].astype(np.float32) + 1000) / 2000, 0, 1)[None].copy())
    cube = torch.from_numpy(np.clip((hu[16:80, 16:80, :].astype(np.float32) + 1000) / 2000, 0, 1)[None].copy())
    panels = [("original", axial(image))]

    def run(transform, data):
        transform.set_random_state(3)
        return transform(data)

    out = run(RandGenesisCorruptiond("image", target_key="target"), {"image": image.clone()})
    panels.append(("Models Genesis input", axial(out["image"])))
    out = run(RandRubikCubed("image", mask_prob=0.5), {"image": image.clone()})
    panels.append((f"Rubik's cube+ (perm {int(out['rubik_permutation'])})", row_of(out["image"])))
    out = run(RandRotationPredictiond("image"), {"image": cube[:, :48, :48, :].clone()})
    panels.append((f"rotation class {int(out['rotation_label'])}", axial(out["image"])))
    out = run(RandJigsawd("image"), {"image": image.clone()})
    panels.append((f"jigsaw (perm {int(out['jigsaw_label'])}), 9 of 27", row_of(out["image"][:9])))
    out = run(RandRelativePatchLocationd("image"), {"image": image.clone()})
    panels.append((f"relative position {int(out['relative_location_label'])}: centre, neighbour", row_of(out["image"])))
    out = run(RandPatchSwapd("image"), {"image": image.clone()})
    panels.append(("patch swapping", axial(out["image"])))
    out = run(RandSliceDropoutd("image", axis=0, slice_prob=0.15), {"image": image.clone()})
    panels.append(("slice dropout (axis H)", axial(out["image"])))
    out = run(RandMaskedPatchesd("image"), {"image": image.clone()})
    panels.append(("masked patches 60 %", axial(out["image"])))
    out = run(RandIntensityJitterd("image"), {"image": image.clone()})
    panels.append(("intensity jitter", axial(out["image"])))
    out = run(RandPositionCropd("image", roi_size=(32, 32, 16), n_bins=4), {"image": image.clone()})
    position = ", ".join(f"{p:.2f}" for p in np.asarray(out["position"]))
    panels.append((f"position crop ({position})", axial(out["image"])))
    out = run(MultiViewd("image", ct_mri_views_3d((64, 64, 32))), {"image": image.clone()})
    panels.append(("contrastive view 1", axial(out["view_0"])))
    panels.append(("contrastive view 2", axial(out["view_1"])))
    save_grid(panels, path, columns=4)


def render_2d(path: Path) -> None:
    xray = synth_xray((128, 128), np.random.default_rng(1), nodule=True).image.astype(np.float32) / 65535
    xray = torch.from_numpy(xray[None].copy())
    tile = synth_histology((128, 128), np.random.default_rng(1), 1).image.astype(np.float32) / 255
    tile = torch.from_numpy(tile.transpose(2, 0, 1).copy())
    panels = [("radiograph", xray[0].numpy()), ("radiograph, CLAHE", np.asarray(CLAHE()(xray))[0])]
    views = MultiViewd("image", xray_views_2d((128, 128)))
    views.set_random_state(0)
    out = views({"image": xray})
    panels += [("X-ray view 1", np.asarray(out["view_0"])[0]), ("X-ray view 2", np.asarray(out["view_1"])[0])]
    panels.append(("H&E tile", tile.numpy().transpose(1, 2, 0)))
    views = MultiViewd("image", histology_views_2d((128, 128), hed_strength=0.1))
    views.set_random_state(0)
    out = views({"image": tile})
    for index in range(2):
        panels.append((f"H&E view {index + 1}", np.clip(np.asarray(out[f"view_{index}"]).transpose(1, 2, 0), 0, 1)))
    save_grid(panels, path, columns=4)


def save_grid(panels, path: Path, columns: int) -> None:
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows))
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (title, picture) in zip(axes.ravel(), panels):
        axis.imshow(picture, cmap="gray", vmin=0, vmax=1)
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    render_3d(DOCS / "transforms_3d.png")
    render_2d(DOCS / "transforms_2d.png")
