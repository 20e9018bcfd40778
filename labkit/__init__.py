"""labkit: the helper package of the VGG16 deep-compression and capacity lab.

Modules: see README.md ("The package"); each module's docstring names the one thing it owns.
"""
import os as _os

__version__ = "0.1.0"

# Tensors of 2 MB and more on transparent huge pages (torch's own switch; read at allocation, so it holds
# even where torch was imported first). A training step frees and allocates about 100 MB of gradients and
# activations; on 4 kB pages each new tensor first pays tens of thousands of page faults. Measured on the quick
# profile (2 CPU cores): a cycle's training 15-25% faster. Set THP_MEM_ALLOC_ENABLE=0 to switch it off.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
