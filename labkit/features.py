"""Running the frozen backbone once per (weights, input size, split, subset), the on-disk cache, statistics.
The cache holds the maps before VGG16's adaptive pool (the head pools, flattens and standardizes per batch): an image
is 512 x 1 x 1 float32 at 32 px (2 KB), 512 x 7 x 7 float16 at 224 px (49 KB; halves the paper profile's memory)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data, files
from . import progress as reporter
from .device import pick_device
from .backbone import announce_cached, build_backbone, imagenet_weights_cached, resolve_weights
from .model import map_size_for


class CacheError(files.FileProblem):
    """A feature cache file is unreadable or does not match what was asked for."""


@dataclass(eq=False)
class FeatureSet:
    """Cached backbone maps (N x 512 x s x s), labels (N) and their origin; device copies and stats are made once."""

    maps: torch.Tensor
    labels: torch.Tensor
    weights: str
    image_size: int
    split: str
    _placed: dict = field(default_factory=dict, repr=False)
    _stats: tuple | None = field(default=None, repr=False)

    def __len__(self):
        return len(self.labels)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(maps, labels) on `device`, copied there the first time only (through pinned memory on CUDA)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.maps, self.labels
        key = str(device)
        if key not in self._placed:
            self._placed[key] = (self.maps.pin_memory().to(device, non_blocking=True), self.labels.to(device))
        return self._placed[key]

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation of the maps (see `feature_stats`), computed once."""
        if self._stats is None:
            self._stats = feature_stats(self.maps)
        return self._stats


def cache_path(weights_tag: str, image_size: int, split: str, subsets: data.Subsets,
               root: str | os.PathLike | None = None) -> Path:
    """The file caching features for this (dataset, weights, input size, split, subset); see data.Subsets."""
    return (data.data_root(root) / "features" /
            f"{subsets.dataset}-vgg16-{weights_tag}-{image_size}px-{split}-{subsets.key(split)}.pt")


def storage_dtype(image_size: int) -> torch.dtype:
    """float32 for 1 x 1 maps (2 KB an image); float16 for larger maps, which dominate memory."""
    return torch.float32 if map_size_for(image_size) == 1 else torch.float16


# Extraction on a CPU expected to take longer than this is announced with its duration before it goes on
ANNOUNCE_ABOVE_S = 60.0


@torch.no_grad()
def extract(backbone: torch.nn.Module, images: torch.Tensor, image_size: int = 32, batch_size: int | None = None,
            device=None, desc: str = "features") -> torch.Tensor:
    """Backbone maps of uint8 images N x 28 x 28 -> N x 512 x s x s in the cache's storage dtype (on the CPU).
    On a CPU an extraction that would take over a minute (timed on the first batch) first says how long it takes."""
    device = pick_device(device)
    cuda = device.type == "cuda"
    if batch_size is None:
        batch_size = 256 if cuda else (128 if image_size <= 64 else 16)
    # channels-last on a GPU; the standard layout elsewhere (a backbone is reused across splits and devices)
    backbone = backbone.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    side = map_size_for(image_size)
    out = torch.empty((len(images), 512, side, side), dtype=storage_dtype(image_size))
    bar = reporter.bar(len(images), desc, "img")
    began = time.perf_counter()
    for start in range(0, len(images), batch_size):
        x = data.to_inputs(images[start:start + batch_size].to(device), image_size)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                maps = backbone(x)
        else:
            maps = backbone(x)
        out[start:start + len(x)] = maps.to(out.dtype).cpu()  # cast on the device: half the bytes cross at 224 px
        bar.update(len(x))
        if start == 0 and not cuda and len(x) < len(images):
            _say_duration(desc, len(images), len(x), time.perf_counter() - began, image_size)
    bar.close()
    return out


def _say_duration(desc: str, total: int, done: int, seconds: float, image_size: int) -> None:
    """Say how long extracting `total` images takes here, measured on the first `done` (when over a minute)."""
    rate = done / max(seconds, 1e-9)
    expected = total / rate
    if expected <= ANNOUNCE_ABOVE_S:
        return
    print(f"labkit: {desc}: {total:,} images at {image_size} px take about {_duration(expected)} on this CPU "
          f"({rate:.1f} images/s, measured on the first {done}); a GPU takes minutes (the 'paper' profile is meant "
          "for one). It is done once: the features are cached for every later run, and Ctrl-C stops it without "
          "writing anything", flush=True)


# below this many images x (image_size / 32)^2 still to extract, nothing is measured (ci and quick at 32 px)
MEASURE_ABOVE = 30_000


def say_cost(c, root: str | os.PathLike | None = None) -> float | None:
    """Before work that fills StudyConfig `c`'s feature caches unseen (`lab`'s notebooks): on a CPU, when the caches
    still to compute are large, time the backbone on a few images and say how long they take here. Returns the
    seconds expected, or None when nothing needed measuring (a GPU, small or cached features)."""
    subsets = c.subsets
    counts = {s: subsets.images(s) for s in data.SPLITS}
    scale = (c.image_size / 32) ** 2
    if pick_device(c.device).type == "cuda" or sum(counts.values()) * scale < MEASURE_ABOVE:
        return None
    tag = resolve_weights(c.weights)
    todo = sum(n for s, n in counts.items() if not cache_path(tag, c.image_size, s, subsets, root).exists())
    if todo * scale < MEASURE_ABOVE:
        return None
    backbone, _ = _backbone(c.weights, 0, tag)
    sample = 64 if c.image_size <= 64 else 16
    began = time.perf_counter()
    with reporter.reporting(bars=False):
        extract(backbone, torch.zeros(sample, 28, 28, dtype=torch.uint8), c.image_size, batch_size=sample,
                device="cpu")
    seconds = time.perf_counter() - began
    _built.clear()  # the caller's processes build their own
    _say_duration(f"VGG16 features of profile {c.profile!r} not cached yet", todo, sample, seconds, c.image_size)
    return todo * seconds / sample


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def describe(tag: str, image_size: int, split: str, subsets: data.Subsets) -> dict:
    """What a feature cache records it holds: dataset, split, image size, weights, subset, seed, the validation split
    its training images stay outside, image count; fields that do not change the images are None."""
    return {"dataset": subsets.dataset, "split": split, "image_size": image_size, "weights": tag,
            "limit": subsets.limit(split), "seed": subsets.seed if subsets.drawn(split) else None,
            "outside_val": (subsets.val or None) if split == "train" else None, "images": subsets.images(split)}


def _check_record(path: Path, payload: dict, asked: dict, fix: str) -> bool:
    """True when the cache records what was asked, False when it records nothing (recomputed), else CacheError."""
    about = payload.get("about")
    if about is None:
        return False
    if not isinstance(about, dict):
        raise CacheError(f"feature cache {path} does not say what it holds; {fix}")
    for key, want in asked.items():
        if key not in about:
            raise CacheError(f"feature cache {path} does not record its {key} (this run asks {key}={want!r}); {fix}")
        if about[key] != want:
            raise CacheError(f"feature cache {path} holds {key}={about[key]!r}, not {want!r} (a cache copied or "
                             f"renamed from another one?); {fix}")
    return True


def load_features(split: str, subsets: data.Subsets, image_size: int = 32, weights: str = "auto",
                  root: str | os.PathLike | None = None, device=None, backbone_seed: int = 0) -> FeatureSet:
    """Backbone maps for a split of `subsets`, computed once and then read from the cache. Its name holds the dataset
    and the weights actually used, so ImageNet and random features (or two datasets')
    never mix; a cache recording other contents than asked (one copied over
    another's name) raises CacheError naming the field."""
    if image_size < 32:
        raise ValueError(f"image_size={image_size}: VGG16 needs at least 32 (its five max-pools take 28 x 28 to 0)")
    tag = resolve_weights(weights, backbone_seed)
    path = cache_path(tag, image_size, split, subsets, root)
    _tidy(path.parent)
    if path.exists():
        held = _held.get(_file_key(path))
        if held is not None:  # already read by this process: every run of a grid shares one copy
            return held
        fix = "delete that file to recompute it"
        payload = files.load_torch(path, "feature cache", fix, CacheError)
        try:
            maps, labels = payload["maps"], payload["labels"]
            ok = maps.dim() == 4 and maps.shape[0] == labels.shape[0] and maps.shape[-1] == map_size_for(image_size)
        except Exception:
            raise CacheError(f"feature cache {path} does not hold maps and labels; {fix}") from None
        if not ok:
            raise CacheError(f"feature cache {path} holds maps of shape {tuple(maps.shape)}, not "
                             f"N x 512 x {map_size_for(image_size)} x {map_size_for(image_size)}; {fix}")
        asked = describe(tag, image_size, split, subsets)
        if _check_record(path, payload, asked, fix):
            if len(labels) != asked["images"]:
                raise CacheError(f"feature cache {path} holds {len(labels):,} images, not the {asked['images']:,} "
                                 f"it records; {fix}")
            announce_cached(tag, weights)
            return _hold(path, FeatureSet(maps, labels, tag, image_size, split))
        print(f"labkit: feature cache {path} was written by an older labkit and does not record what it holds; "
              "computing it again (once)", flush=True)
    else:
        files.writable_folder(path.parent, "the feature cache folder",
                              "set LABKIT_DATA to a folder you can write to (the Makefile uses ./.data)")
    images, labels = subsets.load(split, root)
    backbone, tag = _backbone(weights, backbone_seed, tag)
    path = cache_path(tag, image_size, split, subsets, root)
    maps = extract(backbone, images, image_size, device=device,
                   desc=f"VGG16 features, {split} {image_size}px")
    files.save_torch({"maps": maps, "labels": labels,
                      "about": describe(tag, image_size, split, subsets)}, path)
    return _hold(path, FeatureSet(maps, labels, tag, image_size, split))


def _tidy(folder: Path) -> None:
    """Remove what writers killed mid-write left in the feature cache folder (and in MNIST's beside it)."""
    for place in (folder, folder.parent / "MNIST" / "raw"):
        said = files.said_removed(files.remove_dead_temporaries(place))
        if said:
            print(f"labkit: {said}", flush=True)


# Feature sets this process has read, keyed by file, mtime and size (a rewritten file is read again); a few at most
_held: dict[tuple, FeatureSet] = {}
_HOLD_AT_MOST = 6


# The backbone last built (seconds each), shared by a profile's splits; keyed by the ImageNet file's identity too
_built: dict[tuple, tuple[torch.nn.Module, str]] = {}


def _backbone(weights: str, seed: int, tag: str) -> tuple[torch.nn.Module, str]:
    """build_backbone(weights, seed), built once for every split this process extracts."""
    source = imagenet_weights_cached() if tag == "imagenet" else None
    key = (weights, seed, tag, source and _file_key(source))
    if key not in _built:
        _built.clear()  # one backbone held at most
        _built[key] = build_backbone(weights, seed)
    return _built[key]


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


def _hold(path: Path, fs: FeatureSet) -> FeatureSet:
    _held[_file_key(path)] = fs
    while len(_held) > _HOLD_AT_MOST:
        _held.pop(next(iter(_held)))
    return fs


def feature_stats(maps: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over N (float64 accumulation, chunked to bound memory)."""
    total = torch.zeros(maps.shape[1:], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(maps), chunk):
        block = maps[start:start + chunk].double()
        total += block.sum(0)
        total_sq += (block * block).sum(0)
    n = max(len(maps), 1)
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0)
    return mean.float(), var.sqrt().float()
