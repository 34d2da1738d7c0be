"""Atomic outputs: the destination holds the old or the new complete file, never a partial one."""

import json
import os
import stat

import pytest

from medssl3d.atomic import atomic_path, write_json_atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_json_atomic({"version": 1}, tmp_path / "datalist.json")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_text('{"version": 2, "trunc')
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["datalist.json"]


def test_temporary_keeps_the_suffixes_and_replaces_on_success(tmp_path):
    with atomic_path(tmp_path / "ct.nii.gz") as temporary:
        assert temporary.name.endswith(".nii.gz") and temporary.parent == tmp_path
        temporary.write_bytes(b"new")
    assert (tmp_path / "ct.nii.gz").read_bytes() == b"new"


def test_existing_file_is_kept_without_overwrite(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        write_json_atomic({"x": 1}, tmp_path / "a.json", overwrite=False)
    assert (tmp_path / "a.json").read_text() == "{}"


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic({"x": 1}, tmp_path / "metrics.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, not mkstemp's 0600
