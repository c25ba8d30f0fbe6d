"""The prepared GPU benchmark runs end to end on a CPU (its dry run), printing each number it
promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax  # noqa: F401 (a dev dependency: missing, this module fails, not skips)
import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_script_dry_run_prints_every_number(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--dry-run"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "backend jax" in out, out
    assert re.search(r"^loader: \d+ samples/s$", out, re.M), out
    assert re.search(r"^default: [\d.]+ samples/s training", out, re.M), out
    for grid in (16, 24):
        assert re.search(rf"^fft layer {grid}\^3 x 2, .*: [\d.]+ ms forward\+backward$", out, re.M)
    assert not (REPO_ROOT / ".venv-gpu").exists(), "a dry run installs nothing"


def test_gpu_script_refuses_unknown_arguments():
    done = subprocess.run(
        ["bash", "bench/gpu.sh", "--fast"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2 and "usage" in done.stderr
