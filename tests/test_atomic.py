"""Atomic outputs: the destination holds the old or the new complete file, never a partial one."""

import json
import os
import stat
from pathlib import Path

import pytest

from medssl3d.atomic import atomic_folder, atomic_path, write_json_atomic


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


def test_folder_replaces_the_previous_one_only_when_complete(tmp_path):
    out = tmp_path / "cohort"
    with atomic_folder(out) as staging:
        (staging / "datalist.json").write_text("v1")
    with pytest.raises(KeyboardInterrupt), atomic_folder(out, overwrite=True) as staging:
        (staging / "datalist.json").write_text("v2, half")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"] and (out / "datalist.json").read_text() == "v1"
    with atomic_folder(out, overwrite=True) as staging:
        (staging / "new.json").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == ["new.json"] and [p.name for p in tmp_path.iterdir()] == ["cohort"]


def test_folder_refuses_a_non_empty_destination_and_a_file(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"), atomic_folder(tmp_path / "out"):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"), atomic_folder(tmp_path / "file"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


def test_folder_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("a")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # not mkdtemp's 0700


def _record_syncs(monkeypatch) -> list[tuple[str, str]]:
    """``("sync", path)`` for each ``os.fsync`` and ``("rename", destination)`` for each ``os.replace``, in order."""
    events, fsync, replace = [], os.fsync, os.replace

    def recorded_fsync(handle):
        events.append(("sync", os.path.realpath(f"/proc/self/fd/{handle}")))
        return fsync(handle)

    def recorded_replace(source, destination):
        events.append(("rename", str(destination)))
        return replace(source, destination)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    return events


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names synced handles through /proc")
def test_the_data_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = _record_syncs(monkeypatch)
    write_json_atomic({"x": 1}, tmp_path / "datalist.json")
    (kind, synced), rename, folder = events
    assert kind == "sync" and synced.startswith(str(tmp_path / ".datalist.json.")) and synced.endswith(".tmp.json")
    assert rename == ("rename", str(tmp_path / "datalist.json")) and folder == ("sync", str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names synced handles through /proc")
def test_torch_files_go_through_the_same_writer_with_a_partial_temporary(tmp_path, monkeypatch):
    import torch

    from medssl3d.atomic import remove_partial_files
    from medssl3d.torch_files import safe_torch_load, torch_save_atomic

    events = _record_syncs(monkeypatch)
    torch_save_atomic({"w": torch.ones(2)}, tmp_path / "checkpoint_last.pt")
    (kind, synced), rename, folder = events
    assert kind == "sync" and Path(synced).name.startswith(".checkpoint_last.pt.") and synced.endswith(".partial")
    assert rename == ("rename", str(tmp_path / "checkpoint_last.pt")) and folder == ("sync", str(tmp_path))
    assert torch.equal(safe_torch_load(tmp_path / "checkpoint_last.pt", "File", "")["w"], torch.ones(2))
    (tmp_path / ".checkpoint_last.pt.abc.partial").write_bytes(b"half")  # what a kill leaves
    assert [p.name for p in remove_partial_files(tmp_path)] == [".checkpoint_last.pt.abc.partial"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]
