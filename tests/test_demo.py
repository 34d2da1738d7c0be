"""``medssl3d demo``, the main job, end to end on a tiny cohort with the network blocked."""

import json
import socket

import pytest

from medssl3d.cli import main
from medssl3d.demo import DemoSettings, run_demo
from medssl3d.engine import load_checkpoint


@pytest.fixture
def blocked_network(monkeypatch) -> list:
    """Every outgoing internet connection or DNS lookup raises; the list collects the attempts."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network blocked by the test: connect to {address}")
        return real_connect(self, address)  # local IPC (AF_UNIX) stays allowed

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f"network blocked by the test: {args}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_demo_runs_end_to_end_with_the_network_blocked(tmp_path, capsys, blocked_network):
    """Tiny demo: synthesize -> Genesis bundle 2 iterations -> nodule patches -> fine-tune SSL and scratch ->
    report with real metrics, without any network connection."""
    settings = DemoSettings(out=tmp_path / "demo", cases=6, ct_size=(64, 64, 24), pretrain_epochs=1,
                            crops_per_volume=2, finetune_steps=2, fractions=(0.5, 1.0), seeds=(0,))
    report = run_demo(settings)
    out = capsys.readouterr().out
    assert "[5/5" in out and "ssl" in out and "scratch" in out and str(report) in out
    assert blocked_network == [], "the demo tried to reach the network"

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
