"""Safe loading and privacy: the demo needs no network; DICOM-derived outputs hold no patient identifiers."""

from __future__ import annotations

import gzip
from pathlib import Path

from pydicom.dataset import Dataset

from .dicom_files import data_prep_script, write_ct_series

IDENTIFIERS = {
    "PatientName": "DOE^JANE^QUINCY",
    "PatientID": "PID-4711-XQZ",
    "OtherPatientIDs": "MRN-0042-ALT",
    "PatientBirthDate": "19610203",
    "PatientBirthTime": "231415",
    "PatientAddress": "7 Privet Lane Springfield",
    "PatientTelephoneNumbers": "555-0199-321",
    "PatientMotherBirthName": "ROE^MARTHA",
    "PatientComments": "allergic to contrast jq",
    "AccessionNumber": "ACC998877",
    "StudyID": "STUDY-7731",
    "StudyDate": "20200102",
    "SeriesDate": "20200103",
    "AcquisitionDate": "20200104",
    "ContentDate": "20200105",
    "StudyTime": "101112",
    "StudyDescription": "CHEST FOLLOWUP OF JANE",
    "SeriesDescription": "THORAX DOE 2MM",
    "InstitutionName": "Saint Example Hospital",
    "InstitutionAddress": "12 Sample Street Exampletown",
    "InstitutionalDepartmentName": "Radiology Wing QX",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "PerformingPhysicianName": "CUDDY^LISA",
    "OperatorsName": "CHASE^ROBERT",
    "StationName": "CTSTATION-ZZ9",
    "DeviceSerialNumber": "SN-5550123",
}


def _secrets(files: list[Path]) -> set[str]:
    """Every identifier as written, with ^ as a space, dates in ISO form, and the files' UIDs."""
    import pydicom

    secrets = set(IDENTIFIERS.values()) | {"NESTED-REQ-42"}
    secrets |= {value.replace("^", " ") for value in IDENTIFIERS.values()}
    secrets |= {f"{v[:4]}-{v[4:6]}-{v[6:]}" for k, v in IDENTIFIERS.items() if k.endswith("Date")}
    for path in files:
        dataset = pydicom.dcmread(path)
        secrets |= {str(dataset[k].value) for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")}
    return secrets


def test_dicom_to_datalist_outputs_and_logs_hold_no_identifiers(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSSL3D_GROUP_SALT", "a site salt")  # patient_group is keyed; no file in the home folder
    request = Dataset()
    request.RequestedProcedureID = "NESTED-REQ-42"
    tags = {**IDENTIFIERS, "RequestAttributesSequence": [request]}
    files = write_ct_series(tmp_path / "dicom" / "a", tags=tags)
    files += write_ct_series(tmp_path / "dicom" / "b", shape=(8, 8, 5), tags=tags)
    key = tmp_path / "secret.key"
    key.write_text("a site secret")
    out = tmp_path / "out"
    convert = data_prep_script("dicom_to_nifti")
    assert convert.main([str(tmp_path / "dicom"), str(out / "plain"), "--no-progress"]) == 0
    assert convert.main([str(tmp_path / "dicom"), str(out / "keyed"), "--no-progress",
                         "--pseudonym-key-file", str(key)]) == 0
    assert data_prep_script("make_datalist").main(
        [str(out / "plain"), "--output", str(out / "plain" / "datalist.json"), "--label-fractions"]) == 0
    assert data_prep_script("check_dataset").main(
        [str(out / "plain" / "datalist.json"), "--report", str(out / "integrity"), "--no-progress"]) == 0
    logs = capsys.readouterr()

    written = [p for p in out.rglob("*") if p.is_file()]
    names = sorted(p.name for p in written)
    assert sum(n.endswith(".nii.gz") for n in names) == 4 and sum(n.startswith("series_") for n in names) == 8
    assert "datalist.json" in names and "integrity.json" in names
    texts = {"stdout/stderr": logs.out + logs.err}
    for path in written:
        data = path.read_bytes()
        texts[str(path)] = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("latin-1")
    for secret in _secrets(files):
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} leaked into {where}"
        assert not any(secret in str(path) for path in written)
