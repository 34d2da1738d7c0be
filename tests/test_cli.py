"""The medssl3d command: synth, preprocess and demo, with one-line errors."""

import json

import pytest

from medssl3d.cli import main


def test_synth_writes_a_cohort_and_says_where(tmp_path, capsys):
    assert main(["synth", "--modality", "histology", "--n", "2", "--size", "32", "--out", str(tmp_path / "h")]) == 0
    assert "wrote 2 histology cases" in capsys.readouterr().out
    assert json.loads((tmp_path / "h" / "datalist.json").read_text())["size"] == [32, 32]


def test_unknown_modality_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--modality", "pet", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pet'" in capsys.readouterr().err


def test_too_small_size_prints_one_line_and_writes_nothing(tmp_path, capsys):
    code = main(["synth", "--modality", "ct", "--n", "1", "--size", "16", "--out", str(tmp_path / "ct")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("medssl3d synth: error: ct size 16x16x16 is too small to hold a nodule")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        main(["--debug", "synth", "--modality", "ct", "--n", "1", "--size", "16", "--out", str(tmp_path / "ct")])


def test_preprocess_missing_datalist_is_named(tmp_path, capsys):
    code = main(["preprocess", "--chain", "ct", "--datalist", str(tmp_path / "nope.json"), "--out", str(tmp_path)])
    assert code == 2 and "nope.json' does not exist" in capsys.readouterr().err
