"""labkit: the helper package of the VGG16 deep-compression and capacity lab.

Modules: see README.md ("The package"); each module's docstring names the one thing it owns.
"""
__version__ = "0.1.0"
