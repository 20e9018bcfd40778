"""Files that cannot lie (issue 21): every file knows whose it is, a full disk is named, odd input is a message.

Each test injects one fault as a user or a machine would (a file copied from another run, a spreadsheet's
save, a full disk, a writer killed mid-write, a junk download, Ctrl-C) and asserts the message names the
file or option, what is wrong and the fix; that nothing from a foreign file reaches a table; and that the
run resumes once the fault is gone. Most run in-process on the small test config (seconds each); the few
that must see the command line's exit code and stderr start `python -m labkit`.
"""
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from labkit import backbone, checks, config, data, features, files, model, prune, runner, runs, study
from labkit import __main__ as cli_main

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SMALL = ["--profile", "ci", "--hidden", "64", "48", "16", "--k", "8", "--batch-size", "32", "--train-limit", "300",
         "--val-limit", "200", "--test-limit", "200", "--lr", "1e-3", "--epochs", "1", "--no-progress"]
SAME = ("cycle", "widths", "val_correct", "test_correct", "model_bytes")


def cli(*args, env=None, timeout=300, prelude: str = ""):
    """`python -m labkit ARGS`, after `prelude` (Python run first in that process, e.g. a fault installed)."""
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r})\n{prelude}\n"
            "from labkit.__main__ import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)


def refused(run, *names):
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    for name in names:
        assert str(name) in run.stderr, f"{name!r} not named in: {run.stderr}"
    return run


def in_main(argv, capsys) -> tuple[int, str, str]:
    """labkit's command line in this process: (exit code, stdout, stderr); argparse's exits become codes."""
    try:
        code = cli_main.main(argv)
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes (the lock aside)."""
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()
            and p.name not in (".lock", ".lock-holder")}


def same(rows):
    return [[r[k] for k in SAME] for r in rows]


def run(c, log=None):
    return study.run_study(c, progress=False, log=log)


def dead_pid() -> int:
    """The pid of a process that has ended (no process holds it now)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------- runs to copy files from

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Finished runs of the small config, every checkpoint kept: l2 2 cycles, l1 3 cycles, l2 seed 1 3 cycles,
    and the straight 3-cycle l2 run to compare resumed rows with."""
    base = tmp_path_factory.mktemp("made")
    c = config.make_config("ci", hidden=(64, 48, 16), k=8, cycles=2, epochs=1, batch_size=32, train_limit=300,
                           val_limit=200, test_limit=200, lr=1e-3, checkpoints="all", results_dir=str(base))
    l2 = dataclasses.replace(c)
    run(l2)
    l1 = dataclasses.replace(c, method="l1", cycles=3)
    run(l1)
    seed1 = dataclasses.replace(c, seed=1, cycles=3)
    run(seed1)
    straight = dataclasses.replace(c, cycles=3, results_dir=str(base / "straight"))
    yield {"l2": l2, "l1": l1, "seed1": seed1, "straight": same(run(straight))}
    shutil.rmtree(base, ignore_errors=True)


def copy_of(c, tmp_path) -> config.StudyConfig:
    """`c` with its run folder copied under tmp_path (results_dir moved there)."""
    target = tmp_path / "r"
    shutil.copytree(c.run_dir, target / c.run_name)
    (target / c.run_name / ".lock").unlink(missing_ok=True)
    return dataclasses.replace(c, results_dir=str(target))


# ---------------------------------------------------------------- 1. a checkpoint of another run is refused

@pytest.mark.parametrize("source, named", [("l1", "method='l1', not 'l2'"), ("seed1", "seed=1, not 0")])
def test_checkpoint_of_another_run_copied_in_is_refused_and_nothing_of_it_is_recorded(made, tmp_path, source, named):
    c = copy_of(made["l2"], tmp_path)
    foreign = made[source].run_dir / "checkpoints" / "cycle_002.pt"
    target = c.run_dir / "checkpoints" / "cycle_002.pt"
    shutil.copyfile(foreign, target)
    # the foreign cycle 2 holds a row the history lacks: the folder would "restore" it from there
    before = snapshot(c.run_dir)
    with pytest.raises(files.FileProblem) as info:
        run(dataclasses.replace(c, cycles=3))
    message = str(info.value)
    assert str(target) in message and named in message and "move it aside" in message
    assert snapshot(c.run_dir) == before
    assert len(runs.read_history(c.run_dir / "history.csv")) == 2


def test_checkpoint_copied_in_is_refused_on_the_command_line(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    target = c.run_dir / "checkpoints" / "cycle_002.pt"
    shutil.copyfile(made["l1"].run_dir / "checkpoints" / "cycle_002.pt", target)
    done = refused(cli("study", *SMALL, "--results", c.results_dir, "--cycles", "3"), target, "method='l1'")
    assert "restored" not in done.stdout
    assert [r["method"] for r in runs.read_history(c.run_dir / "history.csv")] == ["l2", "l2"]


def test_checkpoint_renamed_from_another_cycle_is_refused(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    folder = c.run_dir / "checkpoints"
    shutil.copyfile(folder / "cycle_000.pt", folder / "cycle_001.pt")  # cycle 0's head under cycle 1's name
    with pytest.raises(files.FileProblem, match="holds the head after cycle 0, not after cycle 1"):
        run(dataclasses.replace(c, cycles=3))


def test_a_trained_head_saved_under_a_checkpoint_name_is_refused(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    head = model.build_head(c.hidden, seed=0)
    model.save_head(head, c.run_dir / "checkpoints" / "cycle_001.pt", extra={"config": {"lr": c.lr}, "epochs": []})
    with pytest.raises(files.FileProblem, match="cycle_001.pt holds no run settings"):
        run(dataclasses.replace(c, cycles=3))


def test_checkpoint_settings_missing_a_field_are_named_missing(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    path = c.run_dir / "checkpoints" / "cycle_001.pt"
    head, extra = model.load_head(path)
    del extra["config"]["lr"]
    model.save_head(head, path, extra=extra)
    with pytest.raises(files.FileProblem, match="records no lr"):
        run(dataclasses.replace(c, cycles=3))


def test_own_checkpoints_still_resume(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    logs = []
    rows = run(dataclasses.replace(c, cycles=3, device="cpu"), log=logs.append)  # device and cycles may change
    assert any("resuming after cycle 1" in m for m in logs)
    assert same(rows) == made["straight"]


# ---------------------------------------------------------------- 1. a feature cache of another split is refused

@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An own LABKIT_DATA holding MNIST (linked from the shared one) and no feature cache."""
    data.ensure_mnist()
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data.data_root() / "MNIST" / "raw").iterdir():
        if f.is_file() and not f.name.startswith("."):
            os.symlink(f, raw / f.name)
    monkeypatch.setenv("LABKIT_DATA", str(root))
    return root


def _cache_args(split, limit=40, seed=0, val=None, image_size=32, backbone_seed=0, dataset="mnist",
                weights="random"):
    subsets = data.Subsets(**{"train": {"train": limit, "val": val}, "val": {"val": limit},
                              "test": {"test": limit}}[split], seed=seed, dataset=dataset)
    return {"split": split, "subsets": subsets, "image_size": image_size, "weights": weights,
            "backbone_seed": backbone_seed}


def small_cache(split, **kw):
    return features.load_features(**_cache_args(split, **kw))


@pytest.mark.parametrize("wanted, written, named", [
    (dict(split="test", limit=40), dict(split="val", limit=40), "split='val', not 'test'"),
    (dict(split="test", limit=40), dict(split="test", limit=30), "limit=30, not 40"),
    (dict(split="val", limit=40, seed=1), dict(split="val", limit=40, seed=0), "seed=0, not 1"),
    (dict(split="train", limit=40, val=100), dict(split="train", limit=40, val=200),
     "outside_val=200, not 100"),
    (dict(split="test", limit=40, image_size=48), dict(split="test", limit=40, image_size=32),
     "image_size=32, not 48"),
    (dict(split="test", limit=40, backbone_seed=1), dict(split="test", limit=40, backbone_seed=0),
     "weights='random-seed0', not 'random-seed1'"),
])
def test_feature_cache_copied_over_another_name_is_refused(data_root, wanted, written, named):
    source = small_cache(**written)
    args, was = _cache_args(**wanted), _cache_args(**written)
    tag = backbone.resolve_weights("random", args["backbone_seed"])
    target = features.cache_path(tag, args["image_size"], args["split"], args["subsets"])
    source_path = features.cache_path(source.weights, was["image_size"], was["split"], was["subsets"])
    shutil.copyfile(source_path, target)
    features._held.clear()
    with pytest.raises(features.CacheError) as info:
        small_cache(**wanted)
    assert str(target) in str(info.value) and named in str(info.value)
    assert "delete that file to recompute it" in str(info.value)


def test_the_feature_cache_names_and_records_its_dataset(data_root):
    """Issue 28: a second dataset's features never read MNIST's: the dataset is in the cache's name and record."""
    fs = small_cache("test")
    path = features.cache_path(fs.weights, 32, "test", data.Subsets(test=40))
    assert path.name.startswith("mnist-vgg16-") and path.exists()
    assert torch.load(path, weights_only=True)["about"]["dataset"] == "mnist"
    with pytest.raises(ValueError, match="dataset='cifar10'.*mnist"):
        data.Subsets(test=40, dataset="cifar10")


def test_validation_cache_over_the_test_cache_never_reaches_a_table(small_config, data_root):
    splits = study.prepare_features(small_config, progress=False)
    val = features.cache_path(splits.val.weights, 32, "val", small_config.subsets)
    test = features.cache_path(splits.test.weights, 32, "test", small_config.subsets)
    shutil.copyfile(val, test)
    features._held.clear()
    with pytest.raises(features.CacheError, match="split='val', not 'test'"):
        run(small_config)
    assert not (small_config.run_dir / "history.csv").exists()


def test_cache_from_before_caches_recorded_anything_is_computed_again_once(data_root, capsys):
    fs = small_cache("test")
    path = features.cache_path(fs.weights, 32, "test", data.Subsets(test=40))
    torch.save({"maps": fs.maps, "labels": fs.labels}, path)  # as labkit wrote caches before
    features._held.clear()
    small_cache("test")
    assert "does not record what it holds" in capsys.readouterr().out
    features._held.clear()
    small_cache("test")
    assert "computing it again" not in capsys.readouterr().out
    assert torch.load(path, weights_only=True)["about"]["split"] == "test"


# ---------------------------------------------------------------- 3. extending an 'all' run keeps its checkpoints

def test_extending_an_all_run_without_saying_keeps_all(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    logs = []
    run(dataclasses.replace(c, cycles=3, checkpoints="last"), log=logs.append)  # "last": the default
    assert sorted(p.name for p in (c.run_dir / "checkpoints").iterdir()) == [
        "cycle_000.pt", "cycle_001.pt", "cycle_002.pt"]
    assert json.loads((c.run_dir / "config.json").read_text())["checkpoints"] == "all"
    assert any("keeps checkpoints='all'" in m for m in logs)


def test_lowering_the_policy_when_asked_is_said(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    logs = []
    with runs.checkpoint_policy_asked():
        run(dataclasses.replace(c, cycles=3, checkpoints="last"), log=logs.append)
    assert [p.name for p in (c.run_dir / "checkpoints").iterdir()] == ["cycle_002.pt"]
    assert any("checkpoints='last' as asked" in m for m in logs)


def test_command_line_without_checkpoints_keeps_all(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    done = cli("study", *SMALL, "--results", c.results_dir, "--cycles", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "keeps checkpoints='all'" in done.stdout
    assert len(list((c.run_dir / "checkpoints").iterdir())) == 3


# ---------------------------------------------------------------- 4. a control's folder is keyed by its settings

CONTROL_CHANGES = [dict(hidden=(32, 24, 8)), dict(lr=5e-4), dict(epochs=2), dict(batch_size=16), dict(train_limit=250),
                   dict(val_limit=150), dict(test_limit=150), dict(data_seed=3), dict(image_size=64),
                   dict(weights="random"), dict(dropout=0.25)]


@pytest.mark.parametrize("change", CONTROL_CHANGES, ids=lambda d: next(iter(d)))
def test_every_setting_a_control_depends_on_names_its_folder(small_config, change):
    a = config.control_of(dataclasses.replace(small_config, schedule="geometric", layer="all"))
    b = config.control_of(dataclasses.replace(small_config, schedule="geometric", layer="all", **change))
    assert a.run_dir != b.run_dir and a.run_dir.parent == b.run_dir.parent
    scratch_a, scratch_b = (config.scratch_of(x, (8, 8, 8), 3) for x in (a, b))
    if not change.keys() & {"hidden", "epochs"}:  # a scratch control has its own widths and epochs
        assert scratch_a.run_dir != scratch_b.run_dir
    pruned = dataclasses.replace(small_config, **change)
    assert pruned.run_dir != small_config.run_dir


def test_a_control_ignores_what_it_does_not_depend_on(small_config):
    base = config.control_of(small_config)
    for change in (dict(k=4), dict(tolerance=2.0), dict(fraction=0.25), dict(cycles=5), dict(checkpoints="all")):
        assert config.control_of(dataclasses.replace(small_config, **change)).run_dir == base.run_dir


def test_two_knee_searches_with_other_heads_share_a_runs_folder(small_config, tmp_path):
    """Notebook 03's knee cells for two heads, their runs in one folder: each control has a folder of its own."""
    import notebook_cells

    results = tmp_path / "r"
    heads = [(64, 48, 16), (32, 24, 8)]
    for i, head in enumerate(heads):
        c = dataclasses.replace(small_config, hidden=head, results_dir=str(results))
        notebook_cells.knee(c, tmp_path / f"session{i}", compress=False, tolerance=100.0, fraction=0.9)
    controls = sorted(p.name for p in results.iterdir() if "-none-" in p.name)
    assert len(controls) == 2, controls
    assert {tuple(json.loads((results / n / "config.json").read_text())["hidden"]) for n in controls} == set(heads)


# ---------------------------------------------------------------- 5. a full disk is one line naming the folder

DISK = '''
import errno, os
def install_disk(folder, free):
    """A disk under `folder` with `free` bytes left: os.write of files opened there fails with ENOSPC then."""
    folder = os.path.abspath(folder)
    real_open, real_write, real_close = os.open, os.write, os.close
    fds, left = set(), [free]
    def fake_open(path, flags, mode=0o777, *a, **k):
        fd = real_open(path, flags, mode, *a, **k)
        if os.path.abspath(path).startswith(folder) and flags & (os.O_WRONLY | os.O_RDWR):
            fds.add(fd)
        return fd
    def fake_write(fd, data):
        if fd not in fds:
            return real_write(fd, data)
        view = memoryview(data).cast("B")
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        take = min(len(view), left[0])
        left[0] -= take
        return real_write(fd, view[:take])
    def fake_close(fd):
        fds.discard(fd)
        return real_close(fd)
    os.open, os.write, os.close = fake_open, fake_write, fake_close
    def restore():
        os.open, os.write, os.close = real_open, real_write, real_close
    return restore
'''
exec(DISK)


def no_temporaries(folder: Path) -> list:
    return [p for p in Path(folder).rglob("*.tmp")]


def test_full_disk_at_a_checkpoint_is_named_and_the_run_resumes(small_config, made, tmp_path):
    c = dataclasses.replace(small_config, cycles=3, checkpoints="all")
    restore = install_disk(c.run_dir, 5_000)  # room for config.json and the history, not a 6 MB checkpoint
    try:
        with pytest.raises(files.WriteFailed) as info:
            run(c)
    finally:
        restore()
    message = str(info.value)
    assert "no space left on the disk" in message and str(c.run_dir / "checkpoints") in message
    assert re.search(r"cycle_000.pt needs [\d.]+ MB, [\d.]+ [GMk]?B", message), message
    assert "run the same command again" in message
    assert "\n" not in message and "inline_container" not in message
    assert not no_temporaries(c.run_dir) and not list((c.run_dir / "checkpoints").iterdir())
    rows = run(c)  # space freed: the same call goes on
    assert same(rows) == made["straight"]


def test_full_disk_at_the_history_is_named_and_nothing_is_half_written(small_config, tmp_path):
    c = dataclasses.replace(small_config, cycles=2, checkpoints="off")
    run(dataclasses.replace(c, cycles=1))
    history = (c.run_dir / "history.csv").read_bytes()
    settings = len((c.run_dir / "config.json").read_bytes())
    restore = install_disk(c.run_dir, 2 * settings + 50)  # config.json (written twice) fits, the history does not
    try:
        with pytest.raises(files.WriteFailed, match=r"history.csv in .*no space left on the disk \(history.csv "
                                                    r"needs [\d,]+ bytes"):
            run(c)
    finally:
        restore()
    assert (c.run_dir / "history.csv").read_bytes() == history and not no_temporaries(c.run_dir)
    assert len(run(c)) == 2


def test_full_data_disk_names_the_feature_cache_folder(data_root):
    restore = install_disk(data_root / "features", 1_000)
    try:
        with pytest.raises(files.WriteFailed) as info:
            small_cache("test")
    finally:
        restore()
    assert str(data_root / "features") in str(info.value) and "LABKIT_DATA" in str(info.value)
    assert not no_temporaries(data_root)
    assert len(small_cache("test")) == 40


def test_full_disk_on_the_command_line_is_one_line(tmp_path):
    results = tmp_path / "r"
    done = refused(cli("study", *SMALL, "--results", str(results), "--cycles", "1",
                       prelude=DISK + f"install_disk({str(results)!r}, 3000)"), "no space left on the disk", results)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), done.stderr
    assert not no_temporaries(results)


def test_other_write_errors_are_named(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(files.WriteFailed, match=r"cannot write x.csv in .*: permission denied; make that folder "):
        files.write_atomic(tmp_path / "x.csv", "a,b\n")
    assert not list(tmp_path.iterdir())


TMPFS = shutil.which("unshare") and subprocess.run(
    ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True).returncode == 0


@pytest.mark.skipif(not TMPFS, reason="a private tmpfs needs `unshare -rm` (user namespaces) here")
def test_a_real_full_disk_then_freed_resumes(tmp_path):
    """On a 4 MB tmpfs: the run folder's lock on a full disk, then a 6 MB checkpoint; after it is made larger the
    same command goes on."""
    disk = tmp_path / "disk"
    disk.mkdir()
    labkit = " ".join([sys.executable, "-m", "labkit", "study", *SMALL, "--results", str(disk / "r"),
                       "--cycles", "2", "--checkpoints", "all"])
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=4m tmpfs {disk}
        mkdir -p {disk}/r && head -c 8000000 /dev/zero > {disk}/filler 2>/dev/null
        cd {ROOT}; {labkit} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        rm {disk}/filler
        {labkit} > {tmp_path}/ckpt.out 2> {tmp_path}/ckpt.err; echo $? > {tmp_path}/ckpt.rc
        ls -a {disk}/r/*/ {disk}/r/*/checkpoints > {tmp_path}/left.txt 2>&1
        mount -o remount,size=64m {disk}
        {labkit} > {tmp_path}/freed.out 2> {tmp_path}/freed.err; echo $? > {tmp_path}/freed.rc
    """)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], timeout=600)
    read = lambda name: (tmp_path / name).read_text()  # noqa: E731
    for step in ("full", "ckpt"):
        assert read(f"{step}.rc").strip() == "2", read(f"{step}.err")
        assert "Traceback" not in read(f"{step}.err") and "no space left on the disk" in read(f"{step}.err")
        assert len(read(f"{step}.err").strip().splitlines()) == 1, read(f"{step}.err")
    assert "cycle_000.pt needs" in read("ckpt.err") and "inline_container" not in read("ckpt.err")
    assert ".tmp" not in read("left.txt")
    assert read("freed.rc").strip() == "0", read("freed.err")[-3000:]
    assert "resuming" in read("freed.out") or "cycle" in read("freed.out")


# ---------------------------------------------------------------- 6. what a killed writer left is removed

def test_temporary_files_of_dead_writers_are_removed_on_the_next_run(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    dead, alive = dead_pid(), os.getppid()
    left = [c.run_dir / f".history.csv.{dead}.tmp", c.run_dir / "checkpoints" / f".cycle_002.pt.{dead}.tmp",
            c.run_dir / f".labkit-write-test.{dead}"]
    for p in left:
        p.write_bytes(b"x" * 1000)
    live = c.run_dir / "checkpoints" / f".cycle_002.pt.{alive}.tmp"
    live.write_bytes(b"y")
    logs = []
    run(dataclasses.replace(c, cycles=2), log=logs.append)
    assert not any(p.exists() for p in left) and live.exists()
    assert any("removed 3 temporary file(s)" in m for m in logs)


def test_a_writer_killed_mid_write_leaves_nothing_after_the_next_run(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from labkit import files
        def slowly(tmp):
            with open(tmp, "wb") as fh:
                fh.write(b"half a checkpoint")
                fh.flush()
                time.sleep(60)
        files.write_atomic({str(c.run_dir / 'checkpoints' / 'cycle_002.pt')!r}, slowly)
    """)])
    deadline = time.time() + 60
    while time.time() < deadline and not list((c.run_dir / "checkpoints").glob(".*.tmp")):
        time.sleep(0.1)
    writer.kill()
    writer.wait()
    assert list((c.run_dir / "checkpoints").glob(".*.tmp"))
    run(dataclasses.replace(c, cycles=3))
    assert not list(c.run_dir.rglob("*.tmp"))


def test_dead_writers_temporaries_in_the_feature_cache_and_mnist_folders_go(data_root):
    small_cache("test")
    dead = dead_pid()
    left = [data_root / "features" / f".vgg16-x.pt.{dead}.tmp", data_root / "MNIST" / "raw" / f".t10k.{dead}.tmp"]
    for p in left:
        p.write_bytes(b"x")
    features._held.clear()
    small_cache("test")
    assert not any(p.exists() for p in left)


# ---------------------------------------------------------------- 7. a spreadsheet's save, a missing field

def spreadsheet_save(path: Path, add: dict | None = None) -> None:
    """history.csv as a spreadsheet saves it: UTF-8 with a byte-order mark, CRLF line ends, integers as 5.0,
    a column a user added, an empty row at the end."""
    rows = runs.read_history(path)
    columns = [*runs.COLUMNS, *(add or {})]
    lines = [",".join(columns)]
    for r in rows:
        values = [f"{r[k]}.0" if k == "epochs_total" else str(r[k]) for k in runs.COLUMNS]
        lines.append(",".join(values + [str(v) for v in (add or {}).values()]))
    lines.append("," * (len(columns) - 1))
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())


def test_history_saved_by_a_spreadsheet_resumes_and_keeps_a_users_column(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    history = c.run_dir / "history.csv"
    spreadsheet_save(history, {"note": "looks good"})
    logs = []
    rows = run(dataclasses.replace(c, cycles=3), log=logs.append)
    assert same(rows) == made["straight"]
    assert any("'note'" in m and "kept" in m for m in logs)
    text = history.read_text()
    assert text.splitlines()[0].endswith(",note") and text.count("looks good") == 2


def test_history_from_a_spreadsheet_in_a_decimal_comma_language_reads():
    text_of = {"cycle": "0", "method": "l2", "layer": "0", "widths": "25088-8-10", "val_accuracy": "0,5",
               "test_accuracy": "0,25", "rho": "1,5e-05", "train_loss": "0,75", "seconds": "2,5"}
    cells = [text_of.get(c, "3") for c in runs.COLUMNS]
    text = "\ufeff" + ";".join(f" {c}" for c in runs.COLUMNS) + "\r\n" + ";".join(cells) + "\r\n"
    (row,) = runs.parse_history(text)
    assert row["val_accuracy"] == 0.5 and row["rho"] == 1.5e-05 and row["cycle"] == 0 and row["widths"] == (25088, 8, 10)


def test_a_missing_config_field_is_named_missing_never_a_default(made, tmp_path):
    c = copy_of(made["l2"], tmp_path)
    path = c.run_dir / "config.json"
    saved = json.loads(path.read_text())
    del saved["epochs"]
    path.write_text(json.dumps(saved))
    before = snapshot(c.run_dir)
    with pytest.raises(ValueError) as info:
        run(dataclasses.replace(c, cycles=3))
    message = str(info.value)
    assert "no field 'epochs'" in message and str(path) in message and "epochs=2" not in message
    assert snapshot(c.run_dir) == before


def test_a_line_longer_than_the_header_is_named():
    text = ",".join(runs.COLUMNS) + "\n" + ",".join(["0"] * (len(runs.COLUMNS) + 2)) + "\n"
    with pytest.raises(ValueError, match="line 2 has more fields than the header"):
        runs.parse_history(text)


# ---------------------------------------------------------------- 8. a loss that turns NaN, --name

def test_finite_loss_names_lr_and_the_fix():
    assert checks.finite_loss(0.25, 1e-3) == 0.25
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(checks.TrainingDiverged, match=r"lr=1e\+30.*lower lr"):
            checks.finite_loss(bad, 1e30, "epoch 1 of cycle 0")
    assert issubclass(checks.TrainingDiverged, ValueError)  # the command line prints it as one line


def test_a_loss_that_turns_nan_stops_the_run_naming_lr(small_config):
    """Needs train.fit to call checks.finite_loss on each epoch's loss (the lead's part of this case)."""
    c = dataclasses.replace(small_config, lr=1e30, cycles=2)
    with pytest.raises(ValueError, match=r"lr=1e\+30"):
        run(c)
    assert not (c.run_dir / "history.csv").exists()


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", "a\\b", "", " "])
def test_name_must_be_one_folder_name(tmp_path, capsys, name):
    code, out, err = in_main(["study", *SMALL, "--results", str(tmp_path / "r"), "--name", name], capsys)
    assert code == 2 and "must be one folder name" in err and "--name" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="one folder name"):
        config.make_config("ci", name=name)


# ---------------------------------------------------------------- 9. lab -f, profiles, handouts --out, Ctrl-C

@pytest.fixture
def no_notebooks(monkeypatch):
    """run_notebooks recorded, not run."""
    calls = []

    def fake(profile, names, parameters=None, out=None):
        runner.check_parameters(profile, parameters)
        calls.append((profile, dict(parameters or {})))
        return [config.results_root() / profile / f"{n}.ipynb" for n in names]

    monkeypatch.setattr(runner, "run_notebooks", fake)
    return calls


@pytest.mark.parametrize("content, said", [
    (None, "does not exist"), ("- k: 50\n- method: l1\n", "holds a YAML list"), ("k: [50\n", "is not valid YAML"),
    ("just text\n", "holds a YAML single value"), ("1: 2\n", "names a parameter 1"),
])
def test_bad_parameters_files_are_messages(tmp_path, capsys, no_notebooks, content, said):
    path = tmp_path / "p.yml"
    if content is not None:
        path.write_text(content)
    code, out, err = in_main(["lab", "--profile", "ci", "-f", str(path)], capsys)
    assert code == 2 and said in err and str(path) in err and "Traceback" not in err
    assert not no_notebooks


def test_a_profile_in_the_parameters_file_cannot_contradict_profile(tmp_path, capsys, no_notebooks):
    path = tmp_path / "p.yml"
    path.write_text("profile: quick\nk: 50\n")
    code, out, err = in_main(["lab", "--profile", "ci", "-f", str(path)], capsys)
    assert code == 2 and "--profile ci" in err and "profile: quick" in err and not no_notebooks
    code, out, err = in_main(["lab", "-f", str(path)], capsys)  # said once: used for everything
    assert code == 0 and no_notebooks == [("quick", {"profile": "quick", "k": 50})]
    assert "profile 'quick'" in out
    code, out, err = in_main(["lab", "--profile", "quick", "-f", str(path)], capsys)
    assert code == 0
    with pytest.raises(ValueError, match="profile='quick'"):
        runner.check_parameters("ci", {"profile": "quick"})


def test_handouts_out_a_file_is_a_message(tmp_path, capsys):
    pytest.importorskip("nbgrader")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker, blocker / "below"):
        code, _, err = in_main(["handouts", "--profile", "ci", "--out", str(out)], capsys)
        assert code == 2 and str(blocker) in err and "--out" in err and "Traceback" not in err


def test_ctrl_c_in_lab_is_quiet(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_notebooks", interrupted)
    code, out, err = in_main(["lab", "--profile", "ci"], capsys)
    assert code == 130 and "interrupted" in err and "notebooks finished so far" in err and "Traceback" not in err


def _kernels_of(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and "ipykernel" in (proc / "cmdline").read_text() and \
                    f"JPY_PARENT_PID={pid}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the kernel through /proc")
def test_ctrl_c_during_a_real_lab_run_ends_quietly_and_stops_the_kernel(tmp_path):
    env = {**os.environ, "LABKIT_RESULTS": str(tmp_path / "results")}
    lab = subprocess.Popen([sys.executable, "-m", "labkit", "lab", "--profile", "ci", "--only", "02_train_vgg16"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                           start_new_session=True,  # a terminal's Ctrl-C: SIGINT to the whole foreground group
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not _kernels_of(lab.pid):
        time.sleep(0.2)
    kernels = _kernels_of(lab.pid)
    assert kernels, "the kernel should have started"
    time.sleep(3)  # the notebook's cells are running
    os.killpg(lab.pid, signal.SIGINT)
    out, err = lab.communicate(timeout=60)
    assert lab.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "ZMQError" not in err and "IPKernelApp" not in err, err[-3000:]
    assert "interrupted" in err
    time.sleep(2)
    assert not [k for k in kernels if Path(f"/proc/{k}").exists() and
                "ipykernel" in Path(f"/proc/{k}/cmdline").read_text()]


def test_after_ctrl_c_the_kernel_death_it_caused_prints_nothing_but_an_unasked_death_still_does(caplog):
    """The race CI met once: papermill's shutdown after Ctrl-C wakes nbclient's task waiting for a reply, which
    logs "Kernel died" and ends with a DeadKernelError nobody awaits; asyncio prints that when the task is
    collected, after run_notebooks has returned. Reproduced here without a kernel."""
    import asyncio
    import gc
    import logging

    from nbclient.exceptions import DeadKernelError

    async def waiting_for_a_reply():
        logging.getLogger("papermill").error("Kernel died while waiting for execute reply.")
        raise DeadKernelError("Kernel died")

    def orphan_task():
        loop = asyncio.new_event_loop()
        task = loop.create_task(waiting_for_a_reply())
        loop.run_until_complete(asyncio.sleep(0.01))
        assert task.done()
        loop.close()
        del task
        gc.collect()

    with runner._QuietOnceInterrupted():  # no Ctrl-C: a kernel that dies on its own is news
        orphan_task()
    said = caplog.text
    assert "Kernel died while waiting" in said and "never retrieved" in said, said
    caplog.clear()

    # as a terminal's python starts: Python's own Ctrl-C handler (a shell's background job starts with SIGINT
    # ignored, and _QuietOnceInterrupted leaves a handler it did not expect alone)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with runner._QuietOnceInterrupted():
                os.kill(os.getpid(), signal.SIGINT)  # through the handler it installed, as a terminal's Ctrl-C
                time.sleep(1)
        orphan_task()  # after the run has returned, as in CI
        assert not caplog.records, caplog.text
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)
    for name in runner._QuietOnceInterrupted.LOGGERS:  # leave the loggers as they were for the other tests
        logging.getLogger(name).filters.clear()


# ---------------------------------------------------------------- 10. the cost said before it is paid

class SlowBackbone(torch.nn.Module):
    """A backbone that takes 0.1 s a batch and notes what had been printed before its second batch."""

    def __init__(self, capsys):
        super().__init__()
        self.capsys, self.calls, self.printed_before_second = capsys, 0, None

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            self.printed_before_second = self.capsys.readouterr().out
        time.sleep(0.1)
        return torch.zeros(len(x), 512, 1, 1)


def test_extraction_on_a_cpu_says_how_long_it_takes_before_going_on(monkeypatch, capsys):
    monkeypatch.setattr(features, "ANNOUNCE_ABOVE_S", 0.5)
    images = torch.zeros(80, 28, 28, dtype=torch.uint8)
    backbone = SlowBackbone(capsys)
    features.extract(backbone, images, 32, batch_size=8, device="cpu", desc="VGG16 features, train")
    said = backbone.printed_before_second
    assert said and "80 images at 32 px take about" in said and "images/s, measured on the first 8" in said
    capsys.readouterr()
    quick = SlowBackbone(capsys)
    features.extract(quick, images[:16], 32, batch_size=8, device="cpu")  # about 0.2 s: not said
    assert "take about" not in (quick.printed_before_second or "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the cost is said where features are computed on a CPU")
def test_lab_says_what_a_gpu_profile_costs_on_this_cpu_before_it_starts(monkeypatch, capsys, tmp_path, data_root):
    import papermill

    monkeypatch.setattr(features, "ANNOUNCE_ABOVE_S", 1.0)  # this CPU may be fast: say any cost above a second
    started = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: started.append(capsys.readouterr().out))
    runner.run_notebooks("paper", ["01_mec_by_hand"], out=tmp_path / "out")
    assert "VGG16 features of profile 'paper' not cached yet: 70,000 images at 32 px take about" in started[0]
    assert "measured on the first 64" in started[0]
    started.clear()
    runner.run_notebooks("ci", ["01_mec_by_hand"], out=tmp_path / "out")  # a small profile: nothing measured
    assert "take about" not in started[0]


def test_lab_off_a_terminal_prints_a_line_a_minute(monkeypatch, capsys, tmp_path):
    import papermill

    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.2)

    def slow(source, target, progress_bar=None, **kw):
        from tqdm import tqdm

        bar = tqdm(total=10, **progress_bar)
        for _ in range(3):
            time.sleep(0.3)
            bar.update(1)
        bar.close()

    monkeypatch.setattr(papermill, "execute_notebook", slow)
    runner.run_notebooks("ci", ["01_mec_by_hand"], out=tmp_path)
    out = capsys.readouterr().out
    ticks = [line for line in out.splitlines() if "running" in line]
    assert len(ticks) >= 2 and "01_mec_by_hand" in ticks[0] and "cells done" in ticks[-1], out
    assert "01_mec_by_hand  done" in out and "\r" not in out


# ---------------------------------------------------------------- 11. a damaged ImageNet file

@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub folder whose ImageNet file is set by the test; announcements start afresh."""
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(backbone, "_announced", set())
    monkeypatch.setattr(features, "_built", {})
    return folder / backbone.IMAGENET_FILE


def _sound_file(path: Path) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(5)
        convs = backbone._vgg16_features()
    torch.save({f"features.{k}": v for k, v in convs.state_dict().items()}, path)


@pytest.mark.parametrize("damage", ["junk", "empty", "truncated", "other keys", "wrong shape"])
def test_a_damaged_imagenet_file_is_named_with_the_fix(hub, capsys, damage):
    if damage in ("truncated", "wrong shape"):
        _sound_file(hub)
    if damage == "junk":
        hub.write_bytes(os.urandom(20_000))
    elif damage == "empty":
        hub.write_bytes(b"")
    elif damage == "truncated":
        hub.write_bytes(hub.read_bytes()[: hub.stat().st_size // 2])
    elif damage == "other keys":
        torch.save({"weight": torch.zeros(3)}, hub)
    else:
        state = torch.load(hub, weights_only=True)
        state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
        torch.save(state, hub)
    with pytest.raises(backbone.ImageNetFileProblem) as info:
        backbone.build_backbone("imagenet")
    message = str(info.value)
    assert str(hub) in message and "delete it" in message and "--weights random" in message
    assert "weights_only" not in message and f"Put {backbone.IMAGENET_FILE}" not in message
    convs, tag = backbone.build_backbone("auto")
    said = capsys.readouterr().out
    assert tag == "random-seed0" and str(hub) in said and "RANDOMLY INITIALIZED" in said
    assert "uses ImageNet" not in said


def test_a_damaged_imagenet_file_does_not_recompute_the_cache_every_run(hub, data_root, monkeypatch, capsys):
    hub.write_bytes(os.urandom(20_000))
    first = small_cache("test", weights="auto")
    assert first.weights == "random-seed0"
    extracted = []
    monkeypatch.setattr(features, "extract", lambda *a, **k: extracted.append(1))
    features._held.clear()
    again = small_cache("test", weights="auto")
    assert not extracted and again.weights == "random-seed0"
    said = capsys.readouterr().out
    assert "uses ImageNet" not in said


def test_a_sound_imagenet_file_is_still_used(hub, capsys):
    _sound_file(hub)
    convs, tag = backbone.build_backbone("auto")
    said = capsys.readouterr().out
    assert tag == "imagenet" and "uses ImageNet weights" in said and "RANDOMLY" not in said


# ---------------------------------------------------------------- 12. the API refuses k larger than n

def test_reservoir_sampling_refuses_k_larger_than_n():
    with pytest.raises(ValueError, match=r"k=5 .* at most 3"):
        prune.reservoir_sample(3, 5)
    with pytest.raises(ValueError, match="k=-1"):
        prune.reservoir_sample(3, -1)
    assert prune.reservoir_sample(3, 3, 1) == [0, 1, 2] and prune.reservoir_sample(4, 0) == []
    assert all(0 <= i < 100 for i in prune.reservoir_sample(100, 10, 2))


@pytest.mark.parametrize("method", prune.METHODS)
def test_choose_neurons_refuses_k_larger_than_the_rows(method):
    w = torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"k=5 .*3 neurons"):
        prune.choose_neurons(w, 5, method, seed=0)
    assert len(prune.choose_neurons(w, 3, method, seed=0)) == 3


# ---------------------------------------------------------------- 13. make test runs the browser test

def _fake_bin(tmp_path, uid: str, apt: str | None) -> Path:
    """A PATH with only `id` (saying uid) and, if given, an `apt-get` script; no chromium, no sudo."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt is not None:
        (folder / "apt-get").write_text("#!/bin/sh\n" + apt)
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return folder


MAKE = shutil.which("make")


def _make(target, path: Path):
    return subprocess.run([MAKE, "-s", target], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PATH": str(path)}, timeout=60)


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_make_test_without_chromium_stops_with_the_command_to_run(tmp_path):
    done = _make("chromium", _fake_bin(tmp_path, "1000", apt=None))
    assert done.returncode != 0 and "sudo apt-get install chromium" in done.stderr, done.stderr


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_make_test_installs_chromium_as_root_or_says_it_could_not(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    fake = _fake_bin(folder, "0", apt=f'[ "$1" = install ] && printf "#!/bin/sh\\n" > {folder}/bin/chromium && '
                                       f'/bin/chmod +x {folder}/bin/chromium; exit 0\n')
    done = _make("chromium", fake)
    assert done.returncode == 0, done.stderr
    assert "installing Debian's chromium" in done.stdout and (fake / "chromium").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    done = _make("chromium", _fake_bin(broken, "0", apt="exit 100\n"))
    assert done.returncode != 0 and "could not install chromium" in done.stderr


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_make_test_requires_the_browser_test_and_ci_runs_make_test():
    plan = subprocess.run([MAKE, "-n", "test"], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "LABKIT_BROWSER_TEST=required" in plan and "chromium" in plan
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


def test_the_browser_test_fails_rather_than_skips_under_make_test(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(TESTS / "test_browser.py")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PATH": str(tmp_path), "LABKIT_BROWSER_TEST": "required"})
    assert done.returncode != 0 and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]
    assert "apt-get install chromium" in done.stdout
