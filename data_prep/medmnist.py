#!/usr/bin/env python
"""Convert a MedMNIST v2 .npz file into a folder of images (PNG for 2D, NIfTI for 3D or on request for 2D
grey) and a Decathlon-style datalist.json: the official train/val/test splits as training/validation/test,
integer 'class' labels, and nested class-stratified label-fraction subsets of training (training_1pct …).

Example:
    python data_prep/medmnist.py pneumoniamnist.npz --output data/pneumoniamnist \\
        --class-names normal pneumonia --label-fractions 0.01 0.05 0.1 0.25 0.5 --seed 0

Then train a downstream bundle on it, e.g. bundles/xray_cls with --dataset_dir data/pneumoniamnist
--image_size 28 (see that bundle's README). Multi-label files (ChestMNIST) are refused.
See medssl3d/prep/medmnist.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl3d.prep.command import run_command
from medssl3d.prep.medmnist import MEDMNIST_FRACTIONS, convert_medmnist

PROG = "medmnist"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("npz", type=Path, help="MedMNIST .npz file ({train,val,test}_{images,labels})")
    parser.add_argument("--output", required=True, type=Path, help="output folder (images/ and datalist.json)")
    parser.add_argument("--format", choices=("png", "nifti"), help="image files (default: png for 2D, nifti for 3D)")
    parser.add_argument("--label-fractions", type=float, nargs="*", default=MEDMNIST_FRACTIONS,
                        help="labelled shares of training (default 0.01 0.05 0.1 0.25 0.5; none: no subsets)")
    parser.add_argument("--class-names", nargs="+", help="one name per class index, stored in the datalist")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the label-fraction subsets (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    path = convert_medmnist(args.npz, args.output, image_format=args.format, label_fractions=args.label_fractions,
                            seed=args.seed, class_names=args.class_names, overwrite=args.overwrite)
    print(f"{PROG}: wrote {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
