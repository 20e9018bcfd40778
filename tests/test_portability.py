"""labkit on a machine without POSIX: Windows has no fcntl, resource, os.killpg or os.fork.

The test cannot run on Windows here; it takes those away from a Linux Python before anything imports them (a
finder that refuses the modules, the functions deleted from os), then imports every labkit module and runs a ci
study from the command line, its run folder's lock included.
"""
import subprocess
import sys
from pathlib import Path

import labkit

WITHOUT_POSIX = r'''
import importlib.abc, os, sys

POSIX_ONLY = ("fcntl", "resource", "termios", "pwd", "grp")


class NoPosix(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in POSIX_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r} (taken away: as on Windows)", name=name)
        return None


for name in POSIX_ONLY:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, NoPosix())
for name in ("killpg", "fork", "forkpty", "getpgid", "setsid", "setpgrp"):
    if hasattr(os, name):
        delattr(os, name)
'''

MODULES = sorted(p.stem for p in Path(labkit.__file__).parent.glob("*.py") if p.stem != "__init__")


def _without_posix(code: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_POSIX + code, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_the_posix_modules_are_really_gone():
    run = _without_posix("import os\nimport fcntl")
    assert run.returncode != 0 and "taken away" in run.stderr
    run = _without_posix("import os\nprint(hasattr(os, 'killpg'), hasattr(os, 'fork'))")
    assert run.stdout.split() == ["False", "False"], run.stderr


def test_every_module_imports_and_a_ci_study_runs_without_posix(tmp_path):
    code = ("import importlib\n"
            f"for name in {MODULES!r}:\n"
            "    importlib.import_module('labkit.' + name)\n"
            "print('imported', len(sys.modules.get('labkit').__dict__) > 0)\n"
            "from labkit.__main__ import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    run = _without_posix(code, "study", "--profile", "ci", "--results", str(tmp_path / "runs"), "--no-progress")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "imported True" in run.stdout
    histories = list((tmp_path / "runs").glob("*/history.csv"))
    assert len(histories) == 1
    lines = histories[0].read_text().splitlines()
    assert len(lines) == 1 + 3, lines  # a header and the ci profile's three cycles
    assert "peak memory of this process: not measured" in run.stdout  # no resource, no Windows psutil


def test_no_module_imports_a_posix_only_module_at_its_top():
    tops = {name: [line for line in (Path(labkit.__file__).parent / f"{name}.py").read_text().splitlines()
                   if line.startswith(("import ", "from ")) and
                   line.split()[1].split(".")[0] in ("fcntl", "resource", "termios", "pwd", "grp")]
            for name in MODULES}
    assert not {name: lines for name, lines in tops.items() if lines}
