"""Running the five notebooks with papermill into the results folder (`run_notebooks`, what `python -m labkit lab`
runs): local kernels, progress lines, Ctrl-C. A notebook's own session is labkit.notebook."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

from . import checks, config as cfg, files, runs
from .notebook import NOTEBOOK_DIR, NOTEBOOKS

PROGRESS_EVERY_S = 60.0  # off a terminal, a line this often while a notebook runs
# notebook parameters that are also study settings (and so change which features are computed)
_FIELDS = ("image_size", "weights", *cfg.SUBSET_FIELDS, "device")


def _local_kernels(stderr=None):
    """Kernel manager class: ipc (no unencrypted-TCP warning), kernel logs to `stderr`, kernels in `started`."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        started: list = []

        @default("transport")
        def _transport_default(self):
            return "tcp" if os.name == "nt" else "ipc"  # ZeroMQ has no ipc transport on Windows

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if stderr is not None:
                kw["stderr"] = stderr
            await super()._async_launch_kernel(kernel_cmd, **kw)
            LocalKernelManager.started.append(self)

    return LocalKernelManager


class _QuietOnceInterrupted:
    """Mutes the papermill, nbclient and asyncio loggers once Ctrl-C is pressed: the kernel death was asked for."""
    LOGGERS = ("papermill", "nbclient", "asyncio")

    def __init__(self):
        self.interrupted = False

    def filter(self, record) -> bool:
        return not self.interrupted

    def __enter__(self):
        import logging
        import signal
        import threading

        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        self.previous = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame):
        self.interrupted = True
        raise KeyboardInterrupt

    def __exit__(self, kind, value, tb):
        import logging
        import signal

        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.interrupted = True  # a Ctrl-C our handler did not see (another handler's): quiet as well
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if not self.interrupted:  # once interrupted the filter stays: asyncio prints when the task is collected
            for name in self.LOGGERS:
                logging.getLogger(name).removeFilter(self)
        return False


def _stop_kernels(managers) -> None:
    """Kill the kernels still running (Ctrl-C missed their sessions): the process group where there is one."""
    import signal

    for km in managers:
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            try:
                if not hasattr(os, "killpg"):
                    raise OSError("no process groups here")
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()


class _Cells:
    """Where papermill's progress bar writes off a terminal: keeps the latest "done/total" and shows nothing."""

    def __init__(self):
        self.latest = ""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.latest = text.split("\r")[-1].strip()

    def flush(self) -> None:
        pass


def _ticking(name: str, width: int, cells: _Cells, began: float):
    """A thread printing a line every PROGRESS_EVERY_S seconds while a notebook runs (off a terminal)."""
    import threading
    import time

    stop = threading.Event()

    def tick():
        while not stop.wait(PROGRESS_EVERY_S):
            minutes, seconds = divmod(round(time.perf_counter() - began), 60)
            done = f"  {cells.latest} cells done" if cells.latest else ""
            print(f"{name.ljust(width)}  running  {minutes:02d}:{seconds:02d}{done}", flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    return stop


def check_parameters(profile: str, parameters: dict | None) -> dict:
    """Notebook parameters as papermill takes them; ValueError if they name a profile other than `profile`."""
    parameters = dict(parameters or {})
    if any(not isinstance(k, str) for k in parameters):
        raise ValueError(f"notebook parameters {sorted(map(repr, parameters))} must be named by text (name: value)")
    if "profile" in parameters and parameters["profile"] != profile:
        raise ValueError(f"the notebook parameters say profile={parameters['profile']!r}, but the notebooks run "
                         f"profile {profile!r} (their copies, tables and runs go to its folder): give one profile, "
                         "with --profile or in the parameters, not two")
    return parameters


def run_notebooks(profile: str = "quick", names: Sequence[str] = NOTEBOOKS, parameters: dict | None = None,
                  out: str | os.PathLike | None = None) -> list[Path]:
    """Execute the notebooks in order with papermill; returns the executed copies, in `out` (results/<profile>/).

    A line per notebook, live on a terminal, a minute apart in a log. The notebooks' output goes to the copies,
    with progress bars off (LABKIT_PROGRESS=0: a saved bar freezes at its first frame). Ctrl-C stops the kernels
    at once and raises KeyboardInterrupt."""
    checks.choice("profile", profile, tuple(cfg.PROFILES))
    names = [checks.choice("notebook", n, NOTEBOOKS) for n in names]
    parameters = check_parameters(profile, parameters)
    out = files.writable_folder(Path(out) if out else cfg.results_root() / profile, "the results folder",
                                "set LABKIT_RESULTS to a folder you can write to")
    # one lab per results folder: a second would rerun 01 and 02 over the files the first one's 03 is reading
    with contextlib.closing(runs.take_lock(out, "a lab is running there", LAB_BUSY_FIX)):
        return _run_locked(names, profile, parameters, out)


LAB_BUSY_FIX = ("Wait for it to finish (or stop it: Ctrl-C in its terminal), or run this one into another results "
                "folder (LABKIT_RESULTS=another/folder)")


def _run_locked(names, profile, parameters, out: Path) -> list[Path]:
    import sys
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    removed = files.remove_dead_temporaries(out)
    if removed:
        print(files.said_removed(removed), flush=True)
    from . import features

    try:
        settings = cfg.make_config(profile, **{k: v for k, v in parameters.items() if k in _FIELDS})
    except ValueError:
        settings = None  # a notebook refuses such a value itself, in its own words
    if settings is not None:
        features.say_cost(settings)
    os.environ.setdefault("LABKIT_RESULTS", str(cfg.results_root()))
    os.environ["LABKIT_PROGRESS"] = "0"
    width = max(map(len, names))
    done = []
    live = sys.stdout.isatty()  # a terminal: one line per notebook that moves as cells finish
    kernel_log = open(out / ".kernels.log", "wb")  # the kernels' own log of this run (not the cells' output)
    managers = _local_kernels(kernel_log)
    try:
        with _QuietOnceInterrupted():
            for name in names:
                target = out / f"{name}.ipynb"
                cells = _Cells()
                bar = ({"desc": name.ljust(width), "unit": "cell", "file": sys.stdout, "leave": True,
                        "mininterval": 0.5, "bar_format": "{desc}  {bar:20}  {n_fmt:>2}/{total_fmt} cells  {elapsed}"} if live else
                       {"file": cells, "mininterval": 0, "bar_format": "{n_fmt}/{total_fmt}", "disable": False})
                began = time.perf_counter()
                ticker = None if live else _ticking(name, width, cells, began)
                try:
                    papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(target),
                                               parameters={"profile": profile, **parameters},
                                               cwd=str(NOTEBOOK_DIR), progress_bar=bar, log_output=False,
                                               kernel_name="python3", kernel_manager_class=managers)
                except PapermillExecutionError as err:
                    raise RuntimeError(f"notebook {name} stopped in cell {err.exec_count}: {err.ename}: {err.evalue}; "
                                       f"the executed copy with the whole traceback is {target}") from None
                finally:
                    if ticker is not None:
                        ticker.set()
                if not live:  # a log: one line per notebook once it is done
                    minutes, seconds = divmod(round(time.perf_counter() - began), 60)
                    print(f"{name.ljust(width)}  done  {minutes:02d}:{seconds:02d}", flush=True)
                done.append(target)
    except BaseException:
        _stop_kernels(managers.started)
        raise
    finally:
        kernel_log.close()
    return done
