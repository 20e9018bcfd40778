"""labkit: the helper package of the VGG16 deep-compression and capacity lab.

Modules: data (MNIST), model (VGG16 and its head), features (cached backbone maps),
capacity (MEC), prune (neuron removal), train (fit/evaluate), study (the cycles), plots.
"""
__version__ = "0.1.0"
