#!/usr/bin/env python
"""Write a MONAI/Decathlon-style datalist JSON for a folder of images: patient-level training/validation/test
splits (stratified by class where labels exist), nested label-fraction subsets of training
(training_10pct … training_90pct) and the matching unlabelled pretraining pools (unlabeled_10pct …).

Example:
    python data_prep/make_datalist.py data/images --masks data/masks --table data/labels.csv \\
        --output data/datalist.json --split 0.7 0.1 0.2 --label-fractions 0.1 0.25 0.5 --seed 0

The CSV (optional) has a column 'image' (file name or path, matched by file stem) and, used where present,
'patient_id' and 'label' (integer or class name). The patient of an image comes from the CSV's patient column,
else --patient-regex over the file name (group 'patient', else group 1), else the patient_group of the
dicom_to_nifti sidecars (<stem>.json beside each image). Without any of them the command refuses to split
(images of one patient would land on both sides) unless --no-grouping says every image is its own patient.
Masks match an image by the same stem or the stem plus _label, _labels, _seg, _mask, -label, -labels, -seg or
-mask (ct_01.nii.gz <-> ct_01_seg.nii.gz); a stem ending in _image or _img may swap it for the suffix
(brain1_image.nrrd <-> brain1_label.nrrd), and masks may share the images' folder. The datalist records "modality" from --modality, else from the
sidecars' DICOM Modality (CT, MR -> MRI, CR/DX -> XRAY) or the folder's preprocessing.json; unknown: left out.
Load a list with monai.data.load_decathlon_datalist(JSON, data_list_key="training_10pct").
See medssl3d/prep/datalist.py and docs/data_prep_2d_and_datalists.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medssl3d.prep.datalist import DEFAULT_LABEL_FRACTIONS, DEFAULT_SPLIT, MODALITIES, build_datalist
from medssl3d.prep.command import run_command

PROG = "make_datalist"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="datalist JSON to write; paths are relative to its folder")
    parser.add_argument("--masks", type=Path, help="folder of masks matched to images by file stem, or stem + _label, "
                        "_seg, _mask (and _labels, -label, -seg, -mask) (item key 'label')")
    parser.add_argument("--table", type=Path, help="CSV with image, and optionally patient_id and label columns")
    parser.add_argument("--image-column", default="image", help="CSV column of the image name (default image)")
    parser.add_argument("--patient-column", default="patient_id", help="CSV column of the patient id (default patient_id)")
    parser.add_argument("--label-column", default="label", help="CSV column of the class label (default label)")
    parser.add_argument("--patient-regex", help="regex over the file name giving the patient id (group 'patient' or 1)")
    parser.add_argument("--no-grouping", action="store_true",
                        help="every image is a different patient (default: a patient source is required)")
    parser.add_argument("--modality", choices=MODALITIES,
                        help="record the modality (default: from the sidecars' DICOM Modality; unknown: left out)")
    parser.add_argument("--split", type=float, nargs=3, default=DEFAULT_SPLIT, metavar=("TRAIN", "VAL", "TEST"),
                        help="shares of patients (default 0.7 0.1 0.2)")
    parser.add_argument("--label-fractions", type=float, nargs="*", default=DEFAULT_LABEL_FRACTIONS,
                        help="labelled shares of the training patients (default 0.1 … 0.9; none: no subsets)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the splits (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    path = build_datalist(
        args.images, args.output, masks_dir=args.masks, table=args.table, patient_regex=args.patient_regex,
        split=args.split, label_fractions=args.label_fractions, seed=args.seed, overwrite=args.overwrite,
        modality=args.modality, no_grouping=args.no_grouping,
        image_column=args.image_column, patient_column=args.patient_column, label_column=args.label_column,
    )
    written = json.loads(path.read_text())
    images = sum(len(written[key]) for key in ("training", "validation", "test"))
    print(f"{PROG}: wrote {path}: {images} image(s) of {written['numPatients']} patient(s) "
          f"(training {written['numTraining']}, validation {written['numValidation']}, test {written['numTest']}); "
          f"modality {written.get('modality', 'not recorded')}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
