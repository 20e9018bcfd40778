# Setup: on Colab (or with LABKIT_FORCE_COLAB=1) install labkit from a wheel beside this notebook or labkit_pip
import glob, importlib, importlib.util, os, subprocess, sys
if "google.colab" in sys.modules or os.environ.get("LABKIT_FORCE_COLAB") == "1":
    wheels = sorted(glob.glob("labkit-*.whl"))
    spec = labkit_pip or (wheels[-1] if wheels else "")
    if not spec:
        raise RuntimeError("Colab: upload labkit-<version>-py3-none-any.whl beside this notebook, "
                           "or set the parameter labkit_pip to a pip spec for labkit.")
    # Colab already has torch, torchvision, matplotlib and tqdm: then labkit alone is installed
    no_deps = ["--no-deps"] if importlib.util.find_spec("torch") else []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *no_deps, spec], check=True)
    importlib.invalidate_caches()
import matplotlib.pyplot as plt
import labkit
from labkit import checks, notebook
print(f"labkit {labkit.__version__} from {os.path.dirname(labkit.__file__)}")
