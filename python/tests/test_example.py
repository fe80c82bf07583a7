"""python/examples/mae_pretrain.py trains, saves and resumes (when torch is installed)."""

import os
import pathlib
import subprocess

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "mae_pretrain.py"


def test_mae_example_trains_and_resumes(fmnist, tmp_path):
    pytest.importorskip("torch")
    ckpt = tmp_path / "mae.pt"
    common = [os.sys.executable, EXAMPLE, "--data", fmnist.path, "--size", "28", "--patch", "4", "--channels", "1",
              "--batch", "64", "--threads", "1", "--device", "cpu"]
    first = subprocess.run(common + ["--steps", "20", "--save", ckpt], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "step 20 loss" in first.stdout and ckpt.exists()
    # 2,000 records / 64 = 31 batches: the resumed run finishes the epoch's last 11.
    second = subprocess.run(common + ["--resume", ckpt], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "done: 31 steps" in second.stdout, second.stdout
