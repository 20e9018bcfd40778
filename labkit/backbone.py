"""VGG16's frozen convolutions and which weights they hold: torchvision's ImageNet file, checked (used where the torch
hub cache holds it or download.pytorch.org answers; a damaged file is named with its fix), or a seeded random start.
Everything printed about the weights is said here, once and plainly."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from . import files
from .config import WEIGHT_CHOICES
from .device import seeded

IMAGENET_FILE = "vgg16-397923af.pth"  # the file torchvision's VGG16_Weights.IMAGENET1K_V1 downloads
_announced: set[str] = set()


def imagenet_weights_cached() -> Path | None:
    """The ImageNet VGG16 file in the torch hub cache, if it is there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    return path if path.is_file() else None


def _imagenet_fix(path: Path) -> str:
    return (f"delete it so torchvision downloads it again (rm {path}; that needs the network), or use "
            "--weights random (weights='random') for a randomly initialized backbone")


def imagenet_file_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with an ImageNet VGG16 file in the hub cache (empty, cut short, not VGG16's), or None; read
    memory-mapped (its 528 MB are not loaded), once per file version in a process."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        return f"it cannot be read: {err.strerror or err}"
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _checked:
        _checked[key] = _file_problem(path, st.st_size)
    return _checked[key]


_checked: dict[tuple, str | None] = {}
IMAGENET_BYTES = 553_433_881  # the size of torchvision's file, saved in torch's first (pre-zip) format
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # how that format begins


def _file_problem(path: Path, size: int) -> str | None:
    if size == 0:
        return "it is empty (0 bytes), as after an interrupted download or a full disk"
    unreadable = (f"it is not a readable PyTorch file ({size:,} bytes: cut short, or something else saved under "
                  "its name)")
    if zipfile.is_zipfile(path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return unreadable
    else:  # torchvision's own file predates torch's zip format, which memory-mapping needs
        with open(path, "rb") as fh:
            head = fh.read(len(_LEGACY_MAGIC))
        if head == _LEGACY_MAGIC and size == IMAGENET_BYTES:
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return unreadable
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not VGG16's weights"
    with torch.device("meta"):
        wanted = {f"features.{k}": tuple(v.shape) for k, v in _vgg16_features().state_dict().items()}
    for k, shape in wanted.items():
        v = state.get(k)
        if not isinstance(v, torch.Tensor):
            return f"it has no {k} (not torchvision's VGG16 weights)"
        if tuple(v.shape) != shape:
            return f"its {k} has shape {tuple(v.shape)}, not VGG16's {shape}"
    return None


def _vgg16_features() -> nn.Module:
    """VGG16's 13 convolutions as torchvision builds them (without its 138M-parameter classifier)."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"], batch_norm=False)


def _imagenet_backbone() -> nn.Module:
    """VGG16's convolutions from torchvision's IMAGENET1K_V1 file in the hub cache (downloaded first if missing)."""
    from torchvision.models import VGG16_Weights

    cached = imagenet_weights_cached()
    problem = imagenet_file_problem(cached) if cached else None
    if problem:
        raise ImageNetFileProblem(f"the ImageNet VGG16 file {cached} is damaged: {problem}; {_imagenet_fix(cached)}")
    state = torch.hub.load_state_dict_from_url(VGG16_Weights.IMAGENET1K_V1.url, progress=False, check_hash=True,
                                               map_location="cpu", weights_only=True)
    features = _vgg16_features()
    features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    return features


class ImageNetFileProblem(files.FileProblem):
    """The ImageNet VGG16 file in the torch hub cache is damaged (the message names it and the fix)."""


def resolve_weights(weights: str = "auto", seed: int = 0) -> str:
    """The tag of the weights `weights` gives here ("imagenet" or "random-seed<seed>"), said once. "imagenet" with
    weights="imagenet" (a damaged cached file raises ImageNetFileProblem); never with "random"; with "auto" when the
    hub cache holds a sound file or download.pytorch.org answers within 2 s, else random (a damaged file is named
    with its fix)."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights={weights!r} is not one of {WEIGHT_CHOICES}")
    from .data import network_reachable

    cached = imagenet_weights_cached() if weights != "random" else None
    problem = imagenet_file_problem(cached) if cached else None
    if problem and weights == "imagenet":
        raise ImageNetFileProblem(f"weights='imagenet': the ImageNet VGG16 file {cached} is damaged: {problem}; "
                                  f"{_imagenet_fix(cached)}")
    if weights == "imagenet" or (weights == "auto" and not problem and (cached or
                                                                        network_reachable(("download.pytorch.org",)))):
        tag = "imagenet"
    else:
        tag = f"random-seed{seed}"
    if problem:
        _announce(tag, weights, why=f"not used: {cached} is damaged ({problem}); {_imagenet_fix(cached)}")
    elif tag == "imagenet" and not cached:
        pass  # said once the download succeeds or fails (build_backbone), or the cache is read (announce_cached)
    else:
        _announce(tag, weights)
    return tag


def announce_cached(tag: str, asked: str) -> None:
    """Say which weights features read from the cache came from, if nothing has been said yet."""
    if tag == "imagenet" and not imagenet_weights_cached():
        _announce(tag, asked, why="as the feature cache records (the file itself is not in the torch hub cache)")
    else:
        _announce(tag, asked)


def _announce(tag: str, asked: str, why: str = "") -> None:
    if tag in _announced:
        return
    _announced.add(tag)
    if tag == "imagenet":
        cached = imagenet_weights_cached()
        where = why or (f"from {cached}" if cached else
                        f"downloaded once from download.pytorch.org into {Path(torch.hub.get_dir()) / 'checkpoints'}")
        print(f"labkit: VGG16 backbone uses ImageNet weights (IMAGENET1K_V1), {where}.")
    else:
        asked_random = asked == "random"
        why = why or ("not asked for" if asked_random else "not in the torch hub cache and not downloadable here")
        print(f"labkit: VGG16 backbone is RANDOMLY INITIALIZED ({tag}); ImageNet weights were {why}.")


def build_backbone(weights: str = "auto", seed: int = 0) -> tuple[nn.Module, str]:
    """VGG16's conv backbone, frozen and in eval mode, and its weights' tag (see `resolve_weights`). A random one is
    torchvision's own initialization of the whole vgg16() drawn from `seed`, so it is the same on every machine."""
    from torchvision.models import vgg16

    tag = resolve_weights(weights, seed)
    features = None
    if tag == "imagenet":
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            features = _imagenet_backbone()
        except ImageNetFileProblem as err:
            if weights == "imagenet":
                raise
            tag = f"random-seed{seed}"
            _announce(tag, weights, why=f"not used: {err}")
        except Exception as err:
            first = _first_line(err)
            if weights == "imagenet":
                raise files.FileProblem(
                    f"weights='imagenet': ImageNet VGG16 weights are not in {folder} and could not be downloaded "
                    f"({first}). Put {IMAGENET_FILE} in {folder} (torchvision's file), run again where the network "
                    "reaches download.pytorch.org, or use weights='random' (--weights random)") from None
            tag = f"random-seed{seed}"
            _announce(tag, weights, why=f"not in the torch hub cache and could not be downloaded ({first})")
        else:
            _announce(tag, weights)
    if features is None:
        with seeded(seed):
            features = vgg16(weights=None).features
    features.requires_grad_(False).eval()
    return features, tag


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    if "weights_only" in text or "Unsupported global" in text:
        return "the file holds Python objects other than tensors"
    return text.splitlines()[0][:200] if text else type(err).__name__
