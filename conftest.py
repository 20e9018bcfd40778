"""Environment for the whole test run (unit tests and the notebooks nbval executes).

Notebooks run with profile "auto", which reads $LABKIT_PROFILE: the tests use the CI-sized
profile and a results folder of their own, removed when the run ends, so a test run never
touches results/ and leaves nothing behind outside the checkout (MNIST and the feature cache stay
in $LABKIT_DATA, ./.data, for the next run; tools' caches in ./.test-cache).
"""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("LABKIT_DATA", str(Path(__file__).resolve().parent / ".data"))
os.environ["LABKIT_PROFILE"] = os.environ.get("LABKIT_TEST_PROFILE", "ci")
os.environ["LABKIT_RESULTS"] = tempfile.mkdtemp(prefix="labkit-test-results-")
os.environ.setdefault("LABKIT_OFFLINE", "1")  # tests never wait on the network
os.environ.setdefault("LABKIT_PROGRESS", "0")  # no progress bars in test logs
# caches the tools keep (matplotlib's font list, Jupyter's kernel files) stay in the checkout too
_cache = Path(__file__).resolve().parent / ".test-cache"
os.environ.setdefault("MPLCONFIGDIR", str(_cache / "matplotlib"))
os.environ.setdefault("JUPYTER_RUNTIME_DIR", str(_cache / "jupyter-runtime"))
atexit.register(shutil.rmtree, os.environ["LABKIT_RESULTS"], ignore_errors=True)
