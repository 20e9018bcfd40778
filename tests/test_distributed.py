"""torchrun with 2 CPU processes (gloo, DistributedDataParallel) against one process, same global batch."""
import subprocess
import sys

import pytest
import torch.distributed as dist

from labkit import runs

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend")

COMMON = ["study", "--profile", "ci", "--head", "64", "48", "16", "--dropout", "0", "--cycles", "3", "--epochs", "2",
          "--k", "8", "--batch-size", "50", "--train-limit", "230", "--test-limit", "200", "--device", "cpu",
          "--no-progress", "--checkpoints", "none"]


def _run(cmd, cwd):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_two_ranks_match_one_process(tmp_path):
    # 230 images in batches of 50: the last batch (30) is split 15 / 15, and each epoch has 5 steps
    _run([sys.executable, "-m", "labkit", *COMMON, "--results", str(tmp_path), "--name", "one"], tmp_path)
    text = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 "-m", "labkit", *COMMON, "--results", str(tmp_path), "--name", "two"], tmp_path)
    assert "2 processes (torchrun)" in text
    assert text.count("labkit study: run") == 1  # only rank 0 speaks
    one = runs.read_history(tmp_path / "one" / "history.csv")
    two = runs.read_history(tmp_path / "two" / "history.csv")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["widths"] == b["widths"]
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * abs(a["train_loss"]), (a, b)
        assert abs(a["test_correct"] - b["test_correct"]) <= 1
    assert one[0]["train_loss"] != one[-1]["train_loss"]  # it did train
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoints", "config.json", "history.csv"]
