"""torchrun: 2 CPU processes (gloo, DistributedDataParallel) against one process; decisions from rank 0."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from labkit import device, distributed, runs

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend")

COMMON = ["study", "--profile", "ci", "--hidden", "64", "48", "16", "--dropout", "0", "--cycles", "3", "--epochs", "2",
          "--k", "8", "--batch-size", "50", "--train-limit", "230", "--val-limit", "100", "--test-limit", "200",
          "--device", "cpu", "--no-progress", "--checkpoints", "none"]


def _run(cmd, cwd):
    # torchrun keeps its own temporary folder: under TMPDIR, here the test's own folder
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TMPDIR": str(cwd)})
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
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [".lock", "checkpoints", "config.json",
                                                                   "history.csv"]


def test_each_rank_takes_its_own_gpu(monkeypatch):
    assert distributed.device_for_rank("cuda:0", 1) == "cuda:1"
    assert distributed.device_for_rank("cuda", 3) == "cuda:3"
    assert distributed.device_for_rank("cpu", 1) == "cpu"
    assert distributed.device_for_rank("cuda:0", None) == "cuda:0"  # outside torchrun: as asked
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device.pick_device("cuda:0") == torch.device("cuda:1")
    assert device.pick_device("auto") == torch.device("cuda:1")


def _rank_main(folder, results):
    """One rank (torchrun) of a 2-process knee search in which rank 1 would decide differently if it decided alone."""
    import datetime

    os.environ["LABKIT_OFFLINE"] = "1"
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # ranks that disagree fail, not hang
    rank = dist.get_rank()
    from labkit import config, features, model, study

    if rank == 1:  # left alone, rank 1 would stop at its first pruned cycle and take ImageNet weights
        study.stop_cycle = lambda rows, control, tolerance: next((r["cycle"] for r in rows if r["cycle"] >= 1), None)
        real = model.resolve_weights
        model.resolve_weights = features.resolve_weights = (
            lambda weights="auto", seed=0: "imagenet" if weights == "auto" else real(weights, seed))
    c = config.make_config("ci", hidden=(64, 48, 16), k=8, epochs=1, batch_size=32, train_limit=300, val_limit=200,
                           test_limit=200, lr=1e-3, dropout=0.0, device="cpu", schedule="geometric", layer="all",
                           cycles=4, tolerance=100.0, checkpoints="none", results_dir=results)
    rows, _ = study.knee_search(c, progress=False, log=None)
    tag = study.prepare_features(c, progress=False).train.weights
    with open(os.path.join(folder, f"rank{rank}.txt"), "w") as fh:
        fh.write(f"{len(rows)} {tag}")
    dist.barrier()  # both ranks are done communicating before either leaves
    dist.destroy_process_group()


def test_rank_zero_takes_the_decisions(tmp_path):
    # run by torchrun as a real job is (its agent, not rank 0, holds the rendezvous store); this file is the script
    try:
        _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
              str(tmp_path), str(tmp_path / "results")], tmp_path)
    except subprocess.TimeoutExpired:
        raise AssertionError("the two ranks did not finish together: they disagreed") from None
    zero, one = (tmp_path / "rank0.txt").read_text(), (tmp_path / "rank1.txt").read_text()
    assert zero == one == "4 random-seed0"  # tolerance 100: rank 0 never stops; both ran its 4 cycles


if __name__ == "__main__":  # one rank of test_rank_zero_takes_the_decisions, under torchrun
    _rank_main(*sys.argv[1:3])
