"""How a process leaves a DDP run (:func:`medssl3d.distributed.end_distributed_run`): a bundle run ends at its
``finalize`` with exit status 0 and its output written; a program of one's own leaves the group and goes on."""

from __future__ import annotations

import subprocess
import sys

import torch.distributed as dist

from medssl3d.distributed import end_distributed_run

TIMEOUT_S = 120


def test_without_a_process_group_it_does_nothing():
    assert not dist.is_initialized()
    end_distributed_run()
    assert not dist.is_initialized()


def test_a_program_of_ones_own_leaves_the_group_and_goes_on(tmp_path):
    code = ("import torch.distributed as dist\n"
            "from medssl3d.distributed import end_distributed_run\n"
            f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)\n"
            "end_distributed_run()\n"
            "print('still here, group initialised:', dist.is_initialized())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "still here, group initialised: False\n"


def test_a_bundle_run_ends_at_finalize_with_its_output_written(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"""
imports:
  - $import atexit
  - $import logging
  - $import torch.distributed as dist
initialize:
  - "$dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)"
  - "$atexit.register(print, 'atexit handlers ran')"
run:
  - "$logging.getLogger('check').warning('the run is done')"
  - "$print('written before the end', end='')"
finalize:
  - "$from medssl3d.distributed import end_distributed_run"
  - "$end_distributed_run()"
  - "$print('after the end')"
""")
    # stdout is a pipe, so block-buffered: the unterminated line reaches it only through the flush before the end
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config)],
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("written before the end"), result.stdout[-500:]
    assert "the run is done" in result.stderr
    assert "after the end" not in result.stdout and "atexit handlers ran" not in result.stdout
