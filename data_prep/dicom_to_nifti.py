#!/usr/bin/env python
"""Convert every DICOM series under a folder to NIfTI (int16 HU; float32 for fractional rescale values) plus a
JSON sidecar without patient identifiers, holding a salted patient_group key for patient-level splits.

The patient_group is HMAC-SHA-256(salt, PatientID) under the site's secret salt: --group-salt-file, else the
environment variable MEDSSL3D_GROUP_SALT, else ~/.config/medssl3d/group_salt (created on first use). Gantry-
tilted series are resampled onto an orthogonal grid. Exit status 1 when a series failed or nothing was converted.

Example:
    python data_prep/dicom_to_nifti.py /data/dicom /data/nifti --workers 8
    python data_prep/dicom_to_nifti.py /data/dicom /data/nifti --shard $SLURM_ARRAY_TASK_ID/16 --skip-existing

See docs/data_prep_dicom.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl3d.prep.dicom import GROUP_SALT_ENV, convert_dicom_folder, parse_shard, site_group_salt
from medssl3d.prep.command import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="folder searched recursively for DICOM files (any names, any order)")
    parser.add_argument("output", type=Path, help="folder for series_<hash>.nii.gz and series_<hash>.json")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--skip-existing", action="store_true", help="keep existing outputs and skip their series")
    parser.add_argument(
        "--resample-uneven",
        action="store_true",
        help="interpolate series with missing or unevenly spaced slices onto their median spacing "
        "(default: report them as errors)",
    )
    parser.add_argument(
        "--shard", default="0/1", help="'i/n': convert only the i-th of n disjoint parts of the series (i from 0)"
    )
    parser.add_argument(
        "--pseudonym-key-file",
        type=Path,
        help="file holding a secret key: names outputs by HMAC of the SeriesInstanceUID (default: SHA-256)",
    )
    parser.add_argument(
        "--group-salt-file",
        type=Path,
        help="file holding the site's secret salt of the sidecars' patient_group (HMAC of PatientID); default: "
        f"${GROUP_SALT_ENV}, else ~/.config/medssl3d/group_salt, created on first use",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    if args.overwrite and args.skip_existing:
        raise ValueError("--overwrite and --skip-existing exclude each other.")
    key = None
    if args.pseudonym_key_file is not None:
        key = args.pseudonym_key_file.read_bytes().strip()
        if not key:
            raise ValueError(f"{args.pseudonym_key_file}: the pseudonym key file is empty.")
    salt, salt_source = site_group_salt(args.group_salt_file)
    results, errors, skipped_files = convert_dicom_folder(
        args.input,
        args.output,
        workers=args.workers,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        resample_uneven=args.resample_uneven,
        shard=parse_shard(args.shard),
        key=key,
        progress=not args.no_progress,
        group_salt=salt,
    )
    for result in results:
        for message in result.messages:
            print(f"{'skipped' if result.status == 'not_a_volume' else 'warning'}: {message}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"note: patient_group keyed with the {salt_source}", file=sys.stderr)
    counts = {status: sum(r.status == status for r in results) for status in ("written", "exists", "not_a_volume")}
    print(
        f"{counts['written']} series written, {counts['exists']} already there, {counts['not_a_volume']} not volumes, "
        f"{len(errors)} failed; {len(skipped_files)} non-image files ignored; output in {args.output}"
    )
    if errors:
        return 1
    if counts["written"] + counts["exists"] == 0:
        print(f"dicom_to_nifti: error: no series converted: {counts['not_a_volume']} series found, none is a volume "
              "(single slices, screenshots or reports)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("dicom_to_nifti", run, args)


if __name__ == "__main__":
    sys.exit(main())
