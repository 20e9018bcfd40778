"""Environment for the whole test run (unit tests and the notebooks nbval executes).

Notebooks run with profile "auto", which reads $LABKIT_PROFILE: the tests use the CI-sized
profile and a results folder of their own, so a test run never touches results/.
"""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("LABKIT_DATA", str(Path(tempfile.gettempdir()) / "labkit-test-data"))
os.environ["LABKIT_PROFILE"] = os.environ.get("LABKIT_TEST_PROFILE", "ci")
os.environ["LABKIT_RESULTS"] = tempfile.mkdtemp(prefix="labkit-test-results-")
os.environ.setdefault("LABKIT_OFFLINE", "1")  # tests never wait on the network
