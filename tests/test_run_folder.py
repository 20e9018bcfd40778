"""Fault injection on run folders: two processes, other spellings of a path, damaged files, bad options.

Every case asserts the exit code, that the message names the file or option, that no traceback is
printed, and that no finished cycle is lost.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest
import torch

from labkit import capacity, compress, config, data, files, model, prune, runs

HEAD = ["--hidden", "64", "48", "16"]
SMALL = ["--profile", "ci", *HEAD, "--k", "8", "--batch-size", "32", "--train-limit", "300", "--val-limit", "200",
         "--test-limit", "200", "--lr", "1e-3", "--epochs", "1", "--no-progress"]
SAME = ("cycle", "widths", "mec_bits", "val_correct", "test_correct", "train_loss", "model_bytes")


def cli(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def study(results, *extra, **kw):
    return cli("study", *SMALL, "--results", str(results), *extra, **kw)


def ok(run):
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run


def refused(run, *names):
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    for name in names:
        assert str(name) in run.stderr, f"{name!r} not named in: {run.stderr}"
    return run


def rows(folder):
    return [[r[k] for k in SAME] for r in runs.read_history(Path(folder) / "history.csv")]


def only_run(results) -> Path:
    found = [p for p in Path(results).iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A straight 4-cycle run, and the folder of a finished 2-cycle run of the same settings to damage copies of."""
    base = tmp_path_factory.mktemp("reference")
    ok(study(base / "straight", "--cycles", "4"))
    ok(study(base / "two", "--cycles", "2"))
    yield {"four": rows(only_run(base / "straight")), "two": only_run(base / "two")}
    shutil.rmtree(base, ignore_errors=True)


def _files(folder: Path) -> dict:
    """Every file of a run folder with its bytes, the lock (which names its holder) aside."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and p.name not in (".lock", ".lock-holder")}


def fresh_copy(reference, tmp_path) -> Path:
    target = tmp_path / "r" / reference["two"].name
    shutil.copytree(reference["two"], target)
    (target / ".lock").unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------- two processes on one run

# `python -m labkit` that stops after a run's first cycle, its folder locked, and says so on stdout; it goes on
# when a line arrives on stdin: a second process meets a held lock by that event, not by a race with a clock
HELD_AFTER_CYCLE_0 = """
import sys
from labkit import __main__ as cli, study
step = study.Run.step
def held(self):
    row = step(self)
    if len(self.rows) == 1:
        print("held after cycle 0", flush=True)
        sys.stdin.readline()
    return row
study.Run.step = held
sys.exit(cli.main(sys.argv[1:]))
"""


def test_second_process_stops_at_once_and_the_first_finishes(tmp_path):
    run = ["study", *SMALL, "--cycles", "3"]
    first = subprocess.Popen([sys.executable, "-c", HELD_AFTER_CYCLE_0, *run, "--results", str(tmp_path / "r")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:  # until the first process holds the folder, mid-run
            if line.startswith("held after cycle 0"):
                break
        lock = only_run(tmp_path / "r")
        # the first process waits for our line, so a second that returns at all did not wait for the lock
        second = cli(*run, "--results", str(tmp_path / "r"), timeout=120)
        assert first.poll() is None, "the first process still holds the run"
        refused(second, lock, f"pid {first.pid}")
        out, err = first.communicate("go\n", timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    ok(cli(*run, "--results", str(tmp_path / "alone")))
    assert len(rows(lock)) == 3 and rows(lock) == rows(only_run(tmp_path / "alone"))


def test_lock_left_by_a_dead_process_is_taken_over(tmp_path, reference):
    folder = fresh_copy(reference, tmp_path)
    (folder / ".lock").write_text("")  # nobody holds it: left by a process killed without letting go
    (folder / ".lock-holder").write_text("pid 999999 on some-host since 2026-01-01 00:00:00\n")
    ok(study(tmp_path / "r", "--cycles", "3"))
    assert rows(folder) == reference["four"][:3]
    assert not (folder / ".lock-holder").exists()  # the finished run let go


# ---------------------------------------------------------------- a run is its settings, not its path

def test_other_spellings_moves_and_renames_resume(tmp_path, reference):
    work = tmp_path / "work"
    work.mkdir()
    ok(study("./r", "--cycles", "2", cwd=work))
    folder = only_run(work / "r")
    run = ok(study("r/", "--cycles", "3", cwd=work))
    assert "resuming after cycle 1" in run.stdout
    run = ok(study(work / "r", "--cycles", "3", "--name", folder.name))  # absolute, name spelled out
    assert "already finished" in run.stdout
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    folder.rename(moved)
    run = ok(study(moved.parent, "--cycles", "4", "--name", "renamed"))
    assert "resuming after cycle 2" in run.stdout
    assert rows(moved) == reference["four"]


# ---------------------------------------------------------------- damaged files

def _damage(path: Path, kind: str) -> None:
    good = path.read_bytes()
    damaged = {"empty": b"", "truncated": good[: len(good) // 2], "garbage": b"\x00\xffnot what labkit wrote\x07",
               "wrong type": b"[1, 2, 3]\n"}[kind]
    if kind == "wrong type" and path.suffix == ".pt":
        import io

        buf = io.BytesIO()
        torch.save([1, 2, 3], buf)
        damaged = buf.getvalue()
    path.write_bytes(damaged)


KINDS = ("empty", "truncated", "garbage", "wrong type")


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_history_is_refused_then_read_back_from_the_checkpoint(tmp_path, reference, kind):
    folder = fresh_copy(reference, tmp_path)
    before = rows(folder)
    _damage(folder / "history.csv", kind)
    untouched = _files(folder)
    run = refused(study(tmp_path / "r", "--cycles", "3"), folder / "history.csv")
    assert "move it aside" in run.stderr and "read back from the newest checkpoint" in run.stderr
    assert _files(folder) == untouched
    (folder / "history.csv").rename(folder / "history.csv.damaged")  # the fix it names
    run = ok(study(tmp_path / "r", "--cycles", "3"))
    assert "restored" in run.stdout
    assert rows(folder)[:2] == before and rows(folder) == reference["four"][:3]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_history_without_checkpoints_is_refused_and_kept(tmp_path, kind):
    ok(study(tmp_path / "r", "--cycles", "2", "--checkpoints", "off"))
    folder = only_run(tmp_path / "r")
    _damage(folder / "history.csv", kind)
    damaged = (folder / "history.csv").read_bytes()
    run = refused(study(tmp_path / "r", "--cycles", "3", "--checkpoints", "off"), folder / "history.csv")
    assert "move it aside" in run.stderr
    assert (folder / "history.csv").read_bytes() == damaged


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_settings_are_refused_untouched(tmp_path, reference, kind):
    folder = fresh_copy(reference, tmp_path)
    _damage(folder / "config.json", kind)
    before = _files(folder)
    run = refused(study(tmp_path / "r", "--cycles", "3"), folder / "config.json")
    assert "unreadable" in run.stderr and "restore that file, or move the folder aside" in run.stderr
    assert _files(folder) == before


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoint_is_named_and_nothing_is_lost(tmp_path, reference, kind):
    folder = fresh_copy(reference, tmp_path)
    ckpt = folder / "checkpoints" / "cycle_001.pt"
    _damage(ckpt, kind)
    before = rows(folder)
    run = refused(study(tmp_path / "r", "--cycles", "3"), ckpt)
    assert "history.csv stay" in run.stderr
    assert rows(folder) == before


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_feature_cache_is_named(tmp_path, reference, kind, monkeypatch):
    folder = fresh_copy(reference, tmp_path)
    cache = sorted((data.data_root() / "features").glob("*-val-n200-s0.pt"))
    data_copy = tmp_path / "data"
    shutil.copytree(data.data_root(), data_copy, ignore=shutil.ignore_patterns("*.tmp"))
    target = data_copy / "features" / cache[0].name
    _damage(target, kind)
    before = rows(folder)
    run = refused(study(tmp_path / "r", "--cycles", "3", env={**os.environ, "LABKIT_DATA": str(data_copy)}), target)
    assert "delete that file to recompute it" in run.stderr
    assert rows(folder) == before


def test_missing_last_row_beside_its_checkpoint_is_restored(tmp_path, reference):
    folder = fresh_copy(reference, tmp_path)
    history = folder / "history.csv"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))  # lose cycle 1's row
    run = ok(study(tmp_path / "r", "--cycles", "3"))
    assert "restored" in run.stdout
    assert rows(folder) == reference["four"][:3]


def test_deleted_last_checkpoint_says_what_happened_and_keeps_the_rows(tmp_path, reference):
    folder = fresh_copy(reference, tmp_path)
    (folder / "checkpoints" / "cycle_001.pt").unlink()
    before = rows(folder)
    run = refused(study(tmp_path / "r", "--cycles", "3"), folder / "checkpoints" / "cycle_001.pt")
    assert "is missing" in run.stderr and "--checkpoints off" in run.stderr
    assert "checkpoints='last'" in run.stderr and "delete its" not in run.stderr and "delete that" not in run.stderr
    assert rows(folder) == before
    ok(study(tmp_path / "r", "--cycles", "3", "--checkpoints", "off"))  # the fix it names works
    assert rows(folder) == reference["four"][:3]


def test_a_run_that_keeps_no_checkpoints_is_recomputed_to_go_on(tmp_path, reference):
    ok(study(tmp_path / "r", "--cycles", "2", "--checkpoints", "off"))
    folder = only_run(tmp_path / "r")
    assert not list((folder / "checkpoints").iterdir())
    run = ok(study(tmp_path / "r", "--cycles", "4", "--checkpoints", "off"))
    assert "keeps no checkpoints" in run.stdout
    assert rows(folder) == reference["four"]


# ---------------------------------------------------------------- folders that cannot be written

def test_results_folder_under_a_file_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    began = time.time()
    run = refused(study(blocker / "results", "--cycles", "2"), blocker / "results")
    assert "a part of that path is a file" in run.stderr
    assert time.time() - began < 60


def test_data_folder_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    run = refused(study(tmp_path / "r", "--cycles", "2", env={**os.environ, "LABKIT_DATA": str(blocker / "data")}),
                  blocker / "data")
    assert "LABKIT_DATA" in run.stderr


def test_unwritable_folder_names_the_reason(tmp_path, monkeypatch):
    import errno

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(files.FileProblem, match="permission denied.*use another"):
        files.writable_folder(tmp_path / "x", "the results folder", "use another")


# ---------------------------------------------------------------- options refused early and by name

def test_bad_bits_and_device_are_refused_before_any_work(tmp_path):
    began = time.time()
    run = refused(cli("compress", "--profile", "ci", "--bits", "9"), "--bits", "9")
    assert "usage: python -m labkit compress" in run.stderr
    if not torch.cuda.is_available():
        run = refused(study(tmp_path, "--device", "cuda"), "--device", "'cpu'")
        assert "usage: python -m labkit study" in run.stderr
    run = refused(study(tmp_path, "--epochs", "0"), "epochs=0")
    assert "usage: python -m labkit study" in run.stderr
    assert time.time() - began < 60 and not any(tmp_path.iterdir())


def test_missing_start_file_is_named(tmp_path):
    run = refused(study(tmp_path, "--start", str(tmp_path / "nope.pt")), "nope.pt")
    assert "notebook 02" in run.stderr and "delete its" not in run.stderr


def test_cli_writes_under_labkit_results(tmp_path):
    env = {**os.environ, "LABKIT_RESULTS": str(tmp_path / "lr")}
    run = ok(cli("study", *SMALL, "--cycles", "1", env=env, cwd=tmp_path))
    assert (tmp_path / "lr" / "ci" / "runs").is_dir() and not (tmp_path / "results").exists()
    assert str(tmp_path / "lr" / "ci" / "runs") in run.stdout


# ---------------------------------------------------------------- the public API: numbers as people pass them

def test_numpy_and_torch_integers_are_taken_bools_and_fractions_refused():
    head = model.build_head((32, 24, 12), seed=0)
    prune.prune_neurons(head, numpy.int64(0), numpy.int64(5), "l2")
    prune.prune_neurons(head, torch.tensor(1), 2, "l1")
    assert head.widths() == [25088, 27, 22, 12, 10]
    for k in (True, 2.5, "3"):
        with pytest.raises(ValueError, match=f"k={k!r}"):
            prune.prune_neurons(head, 0, k, "l2")
    with pytest.raises(ValueError, match="layer=True"):
        prune.prune_neurons(head, True, 1, "l2")
    assert capacity.mec(numpy.array([2, 3, 1])) == capacity.mec((2, 3, 1)) == 12
    assert capacity.mec(torch.tensor([2, 3, 1])) == 12
    for bad, what in (("123", "list of integers"), ([10.5, 3], "10.5"), ("abc", "list of integers"),
                      ([2, True, 1], "True")):
        with pytest.raises(ValueError, match=what):
            capacity.mec(bad)


def test_data_requirement_takes_arrays_and_lists():
    X, y = [[0.1, 0.0], [0.0, 0.2], [0.3, 0.0], [0.2, 0.2]], [0, 0, 1, 1]
    expected = capacity.data_requirement(torch.tensor(X), torch.tensor(y))
    assert capacity.data_requirement(numpy.array(X), numpy.array(y)) == expected
    assert capacity.data_requirement(X, y) == expected


def test_mnist_limits_are_never_capped_silently():
    with pytest.raises(ValueError, match="train_limit=1000000000.*60,000"):
        data.load_mnist("train", limit=10**9)
    with pytest.raises(ValueError, match="train_limit=59000.*58,000 training images left beside the 2,000 validation"):
        data.load_mnist("train", limit=59_000, val_limit=2000)
    with pytest.raises(ValueError, match="test_limit=20000"):
        config.make_config("ci", test_limit=20_000)


def test_scores_are_float64_with_a_stable_tie_break():
    # float32 rounds 2e8 + 1 and 2e8 + 1.5 to the same number; float64 does not
    w = torch.tensor([[1e8, 1.5, -1e8], [1e8, 1.0, -1e8]])
    assert prune.neuron_scores(w, "magnitude").dtype == torch.float64
    assert prune.choose_neurons(w, 1, "magnitude") == [1]
    tied = torch.tensor([[1.0, 2.0], [2.0, 1.0], [1.0, 2.0]])
    assert prune.choose_neurons(tied, 1, "magnitude") == [0]  # true ties: the lower index


def test_random_file_as_compressed_head_gives_no_unsafe_advice(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(model.CheckpointError) as info:
        compress.load_compressed(junk)
    assert "weights_only" not in str(info.value) and "junk.pt" in str(info.value)
    for bad in (b"", b"PK\x03\x04 truncated"):
        junk.write_bytes(bad)
        with pytest.raises(model.CheckpointError, match="junk.pt"):
            model.load_head(junk)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(model.CheckpointError, match="list.pt is not a labkit head"):
        model.load_head(listed)
