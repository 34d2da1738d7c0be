"""`medssl3d <command>` runs the data preparation command of the same name in data_prep/."""

from pathlib import Path

import pytest

from medssl3d.cli import DATA_PREP_COMMANDS, main

DATA_PREP = Path(__file__).resolve().parents[1] / "data_prep"


def test_every_data_prep_script_is_a_medssl3d_command_and_back():
    scripts = {path.stem.replace("_", "-") for path in DATA_PREP.glob("*.py")}
    assert scripts == set(DATA_PREP_COMMANDS)


def test_help_lists_the_data_preparation_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in DATA_PREP_COMMANDS)


def test_a_command_takes_its_scripts_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["resample", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: medssl3d resample") and "--spacing" in out


def test_a_failing_command_prints_one_line_and_its_status(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    code = main(["make-datalist", str(missing), "--output", str(tmp_path / "datalist.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("make_datalist: error:") and "no_such_folder" in err[0]
    assert not (tmp_path / "datalist.json").exists()
    with pytest.raises(Exception, match="no_such_folder"):
        main(["--debug", "make-datalist", str(missing), "--output", str(tmp_path / "datalist.json")])
