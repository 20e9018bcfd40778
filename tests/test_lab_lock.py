"""One lab per results folder: a second `python -m labkit lab` on a folder a running lab holds stops before it
writes anything, in one line naming the first run's pid, and the first run goes on undisturbed."""
import os
import subprocess
import sys
import time
from pathlib import Path


def _lab(results: Path, *names: str) -> subprocess.Popen:
    env = {**os.environ, "LABKIT_RESULTS": str(results)}
    return subprocess.Popen([sys.executable, "-m", "labkit", "lab", "--profile", "ci", "--only", *names],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_second_lab_on_the_same_folder_stops_at_once_and_the_first_finishes(tmp_path):
    folder = tmp_path / "ci"
    first = _lab(tmp_path, "01_mec_by_hand", "02_train_vgg16")
    try:
        executed = folder / "01_mec_by_hand.ipynb"
        for line in first.stdout:  # off a terminal the lab prints a line when a notebook is done
            if line.startswith("01_mec_by_hand") and " done " in line:
                break  # the first has finished 01 (papermill rewrote it after every cell) and runs 02
        assert first.poll() is None, first.communicate()
        before = (executed.read_bytes(), executed.stat().st_mtime_ns)
        began = time.monotonic()
        second = _lab(tmp_path, "01_mec_by_hand")
        out, err = second.communicate(timeout=60)
        assert time.monotonic() - began < 60
        assert second.returncode != 0
        assert "Traceback" not in out + err
        said = [line for line in err.splitlines() if line.strip()]
        assert len(said) == 1 and f"pid {first.pid}" in said[0] and "a lab is running there" in said[0], err
        assert "LABKIT_RESULTS" in said[0]  # what to do
        assert first.poll() is None, "the second lab stopped the first"
        out, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    assert (executed.read_bytes(), executed.stat().st_mtime_ns) == before, "the second lab rewrote 01"
    assert (folder / "02_train_vgg16.ipynb").exists()
    assert not (folder / ".lock-holder").exists()  # the finished lab let the folder go
