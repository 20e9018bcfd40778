"""Measuring capacity by training: Friedland's random-label memorization and the ladder on real labels (notebook 04).
A ladder's heads train as one network (first layers in one matrix, outputs under a block mask, one summed loss, one
Adam) but share no parameter, so each gets exactly its own gradient. A twin reads each feature `copies` times; its
copies act only through their sum and Adam steps them alike, so training them at lr / copies is exactly training
the sum at lr (tested): the twin trains as that sum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from . import capacity, checks, train
from .config import CLASSES, Widths
from .device import one_thread, seeded



# ---------------------------------------------------------------- what a head stores

def binary_entropy(p: float) -> float:
    """h(p) = -p log2 p - (1 - p) log2 (1 - p) in bits; h(0) = h(1) = 0."""
    return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)


def bits_stored(n: int, accuracy: float, classes: int = CLASSES) -> float:
    """Bits in n uniformly random K-ary labels fitted at `accuracy` a (a fraction), a K-ary symmetric channel's
    capacity: n (log2 K - h(a) - (1 - a) log2 (K - 1)), 0 at or below chance."""
    n = checks.integer("n", n, minimum=0, hint="it counts images")
    accuracy = checks.number("accuracy", accuracy, minimum=0, maximum=1, hint="a fraction, not a percentage")
    classes = checks.integer("classes", classes, minimum=2)
    if accuracy <= 1 / classes:
        return 0.0
    per_image = math.log2(classes) - binary_entropy(accuracy) - (1 - accuracy) * math.log2(classes - 1)
    return n * max(per_image, 0.0)


# ---------------------------------------------------------------- heads trained together

@dataclass(frozen=True)
class HeadSpec:
    """A ladder head: one hidden layer of `hidden` units (0: a linear classifier), each input read `copies` times."""

    hidden: int = 0
    copies: int = 1

    def widths(self, features: int, classes: int = CLASSES) -> Widths:
        """(inputs, [hidden,] classes) as the head reads them: inputs = features x copies."""
        return Widths((features * self.copies, *((self.hidden,) if self.hidden else ()), classes))

    def name(self, features: int, classes: int = CLASSES) -> str:
        """'512-8-10', or '25088-8-10 (512 x 49 repeated)' for a twin on repeated inputs."""
        text = str(self.widths(features, classes))
        return text + (f" ({features} x {self.copies} repeated)" if self.copies > 1 else "")

    def mec_bits(self, features: int, classes: int = CLASSES) -> int:
        """MEC by the four rules on the widths as read (nominal: repeated inputs counted as distinct)."""
        return capacity.mec(self.widths(features, classes))

    def mec_effective_bits(self, features: int, classes: int = CLASSES) -> int:
        """MEC by the four rules on the distinct inputs: a twin counts as its one-copy head."""
        return capacity.mec(HeadSpec(self.hidden).widths(features, classes))


def _check_specs(specs: Sequence[HeadSpec]) -> list[HeadSpec]:
    specs = list(specs)
    if not specs:
        raise ValueError("a ladder needs at least one HeadSpec, e.g. [HeadSpec(8), HeadSpec(0)]")
    for s in specs:
        checks.integer("hidden", s.hidden, minimum=0, hint="0 makes a linear classifier")
        checks.integer("copies", s.copies, minimum=1, hint="1 reads each feature once")
    return specs


class Ladder(nn.Module):
    """Heads side by side on shared features: forward(x: N x features) -> logits N x heads x classes, in the order
    given; each head starts from its own seed, whatever heads share the ladder (inside, MLP heads come first)."""

    def __init__(self, specs: Sequence[HeadSpec], features: int, classes: int = CLASSES,
                 seeds: Sequence[int] | None = None):
        super().__init__()
        self.specs, self.features, self.classes = _check_specs(specs), features, classes
        seeds = list(seeds) if seeds is not None else list(range(len(self.specs)))
        mlp = [i for i, s in enumerate(self.specs) if s.hidden]
        self.inside_order = mlp + [i for i, s in enumerate(self.specs) if not s.hidden]  # as `inside` returns them
        layers = {}
        for i in self.inside_order:
            widths = self.specs[i].widths(features, classes)
            with seeded(seeds[i]):
                layers[i] = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
        self.first_weight = nn.Parameter(torch.cat([_first_layer(layers[i][0], features)
                                                    for i in self.inside_order]))
        self.first_bias = nn.Parameter(torch.cat([layers[i][0].bias.detach() for i in self.inside_order]))
        self.hidden_units = sum(self.specs[i].hidden for i in mlp)
        out = torch.zeros(len(mlp) * classes, self.hidden_units)
        mask = torch.zeros_like(out)
        col = 0
        for m, i in enumerate(mlp):  # block m: head i's classes read head i's hidden units only
            rows, cols = slice(m * classes, (m + 1) * classes), slice(col, col + self.specs[i].hidden)
            out[rows, cols], mask[rows, cols] = layers[i][1].weight.detach(), 1
            col += self.specs[i].hidden
        self.out_weight = nn.Parameter(out)
        self.register_buffer("out_mask", mask)
        self.out_bias = nn.Parameter(torch.cat([layers[i][1].bias.detach() for i in mlp]) if mlp else
                                     torch.zeros(0))
        self.register_buffer("order", torch.argsort(torch.tensor(self.inside_order)))

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """Logits N x heads x classes, heads in `inside_order` (training uses this: no reordering)."""
        z = torch.addmm(self.first_bias, x, self.first_weight.T)  # N x units: one matmul, every head
        h = self.hidden_units
        mlp = torch.addmm(self.out_bias, z[:, :h].relu(), (self.out_weight * self.out_mask).T)
        return torch.cat([mlp, z[:, h:]], 1).view(len(x), len(self.specs), self.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inside(x)[:, self.order]


def _first_layer(layer: nn.Linear, features: int) -> torch.Tensor:
    """A head's first-layer weights as units x features, a twin's copies summed."""
    w = layer.weight.detach()
    return w.view(len(w), features, -1).sum(-1)


@one_thread()
def fit_ladder(ladder: Ladder, x: torch.Tensor, y: torch.Tensor, counts: Sequence[int], steps: int = 300,
               lr: float = 0.01, criterion: float | None = None, groups: Sequence[int] | None = None,
               check_every: int = 20) -> list[float]:
    """Full-batch Adam on the first counts[h] samples for head h; returns the best training accuracy each reached
    (fractions, checked every `check_every` steps). x: N x features, y: N labels. Stops once every group
    (`groups[h]`, default one per head) has a head at `criterion` (None: never). Runs on one CPU thread."""
    order = ladder.inside_order
    n = max(counts)
    x, y = x[:n], y[:n]
    counts_t = torch.tensor([float(counts[i]) for i in order], device=x.device)
    mine = (torch.arange(n, device=x.device)[:, None] < counts_t[None, :]).float()  # N x heads: whose samples
    weight = mine / counts_t.clamp_min(1)
    target = y[:, None, None].expand(n, len(order), 1)
    group = torch.tensor([(groups or range(len(order)))[i] for i in order], device=x.device)
    optimizer = torch.optim.Adam(ladder.parameters(), lr=lr, fused=True)
    best = torch.zeros(len(order), dtype=torch.float64, device=x.device)

    def each_head_mean(logits: torch.Tensor, labels: torch.Tensor, share: float) -> tuple:
        # cross-entropy as logsumexp - the label's logit: log_softmax over 10 classes is slow on a CPU
        loss = ((logits.logsumexp(-1) - logits.gather(-1, target).squeeze(-1)) * weight).sum()
        return loss, loss.detach(), 0

    @torch.no_grad()
    def reached(step: int, row) -> bool:
        nonlocal best
        if step % check_every and step != steps:
            return False
        correct = ((ladder.inside(x).argmax(-1) == y[:, None]).float() * mine).sum(0).double()
        best = torch.maximum(best, correct / counts_t.double().clamp_min(1))  # float64: 360 / 400 is 0.9
        return criterion is not None and _every_group_reached(best >= criterion, group)

    # full batch: one step an "epoch", on the samples in their order
    train.train_epochs(ladder.inside, optimizer, x, y, steps, n, objective=each_head_mean, watch=reached,
                       mixed_precision=False)
    result = [0.0] * len(order)
    for j, i in enumerate(order):
        result[i] = float(best[j])
    return result


def _every_group_reached(reached: torch.Tensor, group: torch.Tensor) -> bool:
    """Whether every group holds at least one head that reached the criterion (reached, group: one per head)."""
    per_group = torch.zeros(int(group.max()) + 1, device=reached.device)
    return bool(per_group.scatter_reduce(0, group, reached.float(), "amax").all())


# ---------------------------------------------------------------- random labels: how many images each head fits

def random_labels(n: int, classes: int = CLASSES, seed: int = 0) -> torch.Tensor:
    """n labels drawn uniformly from 0..classes-1 with their own seeded generator (independent of the images)."""
    n = checks.integer("n", n, minimum=1, hint="it counts images")
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def images_memorized(fits, limit: int, start: int = 100, precision: float = 0.125) -> int:
    """The most images (at most `limit`) a head fits, fits(n) -> bool: doubling from `start`, then bisection until
    the bracket is within `precision` of the fitted n (or adjacent). Returns the last n fitted (0: none)."""
    lo, hi = 0, None  # fitted lo images; failed hi (None: no failure yet)
    n = min(start, limit)
    while hi is None:
        if fits(n):
            lo = n
            if n == limit:
                return lo
            n = min(2 * n, limit)
        else:
            hi = n
    while hi - lo > max(1, int(precision * lo)):
        n = (lo + hi) // 2
        if fits(n):
            lo = n
        else:
            hi = n
    return lo


class _Stopped(Exception):
    """Raised inside a search whose caller stopped waiting for it."""


class Lockstep:
    """One search per head (search(fits, limit) -> n, each in a thread), its fits(n) questions answered in rounds:
    `questions()` gives what each running search asks next, `answer` the verdicts, `results()` what each returned."""

    def __init__(self, search, heads: int, limit: int):
        import threading

        self.cond, self.asked, self.answers, self.done = threading.Condition(), {}, {}, {}
        self.limit, self.tried = limit, [set() for _ in range(heads)]  # every n each head asked about
        self.stopped = False  # the caller gave up (an error, Ctrl-C): every waiting search ends
        self.threads = [threading.Thread(target=self._run, args=(search, h, limit), daemon=True)
                        for h in range(heads)]
        for t in self.threads:
            t.start()

    def _run(self, search, h: int, limit: int) -> None:
        def fits(n) -> bool:
            n = checks.integer("n", n, 1, limit, hint=f"fits(n) can try 1 to {limit} images (all there are)")
            with self.cond:
                self.asked[h] = n
                self.tried[h].add(n)
                self.cond.notify_all()
                self.cond.wait_for(lambda: h in self.answers or self.stopped)
                if h not in self.answers:
                    raise _Stopped()
                return self.answers.pop(h)

        try:
            result = search(fits, limit)
        except BaseException as err:  # noqa: B036 (handed to the caller's thread)
            result = err
        with self.cond:
            self.done[h] = result
            self.cond.notify_all()

    def questions(self) -> dict:
        """{head: n} every search still running asks next (each asks one at a time); {} once all are done."""
        with self.cond:
            self.cond.wait_for(lambda: len(self.asked) + len(self.done) == len(self.threads))
            asked, self.asked = self.asked, {}
            return asked

    def answer(self, verdicts: dict) -> None:
        """{head: fitted?}: each asking search goes on."""
        with self.cond:
            self.answers.update(verdicts)
            self.cond.notify_all()

    def stop(self) -> None:
        """End every search still waiting for an answer (their threads return)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def results(self) -> list[int]:
        """What each search returned, by head; re-raises a search's error; ValueError for an n it never asked."""
        for h in sorted(self.done):
            if isinstance(self.done[h], BaseException):
                raise self.done[h]
        found = [checks.integer("images_memorized", self.done[h], 0, self.limit, hint="the search returns how "
                                "many images a head fitted") for h in range(len(self.threads))]
        unasked = [n for h, n in enumerate(found) if n and n not in self.tried[h]]
        if unasked:
            raise ValueError(f"the search returned {unasked[0]} images, which it never asked fits about: it must "
                             "return the last n that fitted (see its check in notebook 04)")
        return found


def memorization_row(spec: HeadSpec, features: int, n: int, accuracy: float, criterion: float, n_max: int,
                     bits=None, classes: int = CLASSES) -> dict:
    """A memorization.csv row for `spec`, n of n_max images fitted at `accuracy` (`bits`: default `bits_stored`)."""
    widths = spec.widths(features, classes)
    return {"head": spec.name(features, classes), "widths": widths, "inputs": widths[0], "copies": spec.copies,
            "parameters": capacity.parameter_count(widths), "mec_bits": spec.mec_bits(features, classes),
            "mec_effective_bits": spec.mec_effective_bits(features, classes), "images_memorized": n,
            "all_images": n >= n_max, "criterion": criterion, "accuracy_at": accuracy,
            "bits_stored": round((bits or bits_stored)(n, accuracy, classes))}


# ---------------------------------------------------------------- from cached features to the two experiments

def standardized(feature_set, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """A FeatureSet's maps as N x (512 s s) float32, standardized as model.Standardize does (training stats)."""
    from .model import Standardize

    maps = feature_set.maps
    norm = Standardize(tuple(maps.shape[1:]))
    norm.set_stats(*(stats or feature_set.stats()))
    return norm(maps).flatten(1)


def repeats(map_size: int) -> int:
    """Exact copies of each cached value among the head's 25,088 inputs: 49 at a 1 x 1 map, else 1 (mixtures)."""
    from .model import POOLED

    return POOLED * POOLED if checks.integer("map_size", map_size, minimum=1) == 1 else 1


def memorization_ladder(map_size: int, widths: Sequence[int] = (1, 2, 4, 8, 16, 32),
                        twin: int = 8) -> list[HeadSpec]:
    """A head of each hidden width on the distinct features, plus a `twin`-wide one on repeated inputs if any."""
    specs = [HeadSpec(w) for w in widths]
    copies = repeats(map_size)
    return specs + ([HeadSpec(twin, copies)] if copies > 1 and twin else [])
