"""The medssl3d command: synth, preprocess and demo, with one-line errors."""

import json

import pytest

from medssl3d.cli import main
from medssl3d.demo import DemoSettings, run_demo
from medssl3d.engine import load_checkpoint


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


def test_demo_runs_the_main_job_end_to_end(tmp_path, capsys):
    """Tiny demo: synthesize -> Genesis bundle 2 iterations -> nodule patches -> fine-tune SSL and scratch ->
    report with real metrics."""
    settings = DemoSettings(out=tmp_path / "demo", cases=6, ct_size=(64, 64, 24), pretrain_epochs=1,
                            crops_per_volume=2, finetune_epochs=2, fractions=(0.5, 1.0), seeds=(0,))
    report = run_demo(settings)
    out = capsys.readouterr().out
    assert "[5/5" in out and "ssl" in out and "scratch" in out and str(report) in out

    checkpoint = load_checkpoint(settings.out / "pretraining" / "checkpoints" / "checkpoint_last.pt")
    assert checkpoint["iteration"] == 2  # 4 training volumes, 2 per batch, 1 epoch
    saved = json.loads((report.parent / "metrics.json").read_text())
    runs = saved["tables"]["every run"]
    assert {(r["init"], r["fraction"]) for r in runs} == {(i, f) for i in ("ssl", "scratch") for f in (0.5, 1.0)}
    for run in runs:
        assert 0.0 <= run["accuracy"] <= 1.0 and run["labelled"] >= 2
    assert saved["metrics"]["cohort"]["test_nodules"] > 0
    for figure in ("label_fraction_auc.png", "tsne_pretrained_test.png", "gradcam_test.png"):
        assert (report.parent / figure).stat().st_size > 1000
        assert f"({figure})" in report.read_text()


def test_demo_rejects_a_cohort_too_small_to_split(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--cases", "0"]) == 2
    assert "medssl3d demo: error:" in capsys.readouterr().err
