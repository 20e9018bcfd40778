"""How big must the head be? The knee: the smallest head within tolerance of its equal-budget control.

A probe ("oneshot") prunes a trained start to given widths in one step and recovers (config.KNEE_RECOVERY, early
stopping); its control is the same start trained as many epochs, nothing removed. The search shrinks the pruned
layers by (1 - fraction) a step until the seeds' mean validation accuracy falls out of tolerance, then bisects
(`next_scale`). `Search` keeps the books, `compress_knee` stores the knee head, `knee_choice` picks the kept head from
knee.csv's rows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from statistics import mean
from typing import Sequence

from . import config as cfg
from . import device, model
from . import progress as reporter
from . import study
from .config import CONTROLS, StudyConfig, Widths, parse_widths
from .runs import RunFolder

RESOLUTION = cfg.KNEE_RESOLUTION  # the search stops once lo / hi <= RESOLUTION (the knee known to within 15%)
MAX_STEPS = cfg.GEOMETRIC_CYCLES  # and after this many steps at most

# ---------------------------------------------------------------- decisions (validation only)

def within_tolerance(baseline: float, accuracy: float, tolerance: float) -> bool:
    """True when `accuracy` is at most `tolerance` percentage points below `baseline` (both fractions)."""
    return accuracy >= baseline - tolerance / 100 - 1e-12


def against_control(rows: Sequence[dict], control: Sequence[dict]) -> dict[int, dict]:
    """Per cycle that every seed reached and the control covers, the pruned heads against the control on validation,
    paired by seed (rows without `seed` count as seed 0): {cycle: {"val_accuracy", "control_val_accuracy" (means over
    seeds), "seeds", "diffs" (per seed, points)}}."""
    ctl = {(r.get("seed", 0), r["cycle"]): r for r in control}
    seeds = list(dict.fromkeys(r.get("seed", 0) for r in rows))
    out = {}
    for cycle in sorted({r["cycle"] for r in rows}):
        mine = {r.get("seed", 0): r for r in rows if r["cycle"] == cycle}
        if set(mine) != set(seeds) or any((s, cycle) not in ctl for s in seeds):
            continue
        a = [mine[s]["val_accuracy"] for s in seeds]
        b = [ctl[(s, cycle)]["val_accuracy"] for s in seeds]
        out[cycle] = {"val_accuracy": mean(a), "control_val_accuracy": mean(b), "seeds": len(seeds),
                      "diffs": [100 * (x - y) for x, y in zip(a, b)]}
    return out


def in_tolerance(rows: Sequence[dict], control: Sequence[dict], tolerance: float) -> list[int]:
    """Cycles whose mean validation accuracy over seeds is within `tolerance` points of the control's (cycle 0
    always counts)."""
    return [cycle for cycle, m in against_control(rows, control).items()
            if cycle == 0 or within_tolerance(m["control_val_accuracy"], m["val_accuracy"], tolerance)]


def smallest_within(rows: Sequence[dict], control: Sequence[dict], tolerance: float = 1.0) -> dict:
    """The first seed's row of the `in_tolerance` cycle with the fewest parameters (cycle 0, the unpruned
    head, always counts); ValueError when `rows` is empty or the control covers no cycle."""
    if not rows:
        raise ValueError("no rows: run the study first")
    ok = in_tolerance(rows, control, tolerance)
    if not ok:
        raise ValueError("no cycle is within tolerance of the control: the control rows do not cover these cycles")
    first = rows[0].get("seed", 0)
    candidates = [r for r in rows if r.get("seed", 0) == first and r["cycle"] in ok]
    return min(candidates, key=lambda r: (r["parameters"], -r["val_accuracy"]))


def recovery(c: StudyConfig) -> dict:
    """The recovery of the profile: {"epochs" (at most), "patience", "lr_factor" (times c.lr)}."""
    return cfg.KNEE_RECOVERY[c.profile]


def probe_widths(hidden: Sequence[int], layer, scale: float) -> tuple[int, ...]:
    """A probe's hidden widths at `scale`: the pruned layer(s) (`layer` or "all") scaled, rounded, at least 1 each."""
    pruned = range(len(hidden)) if layer == "all" else [int(layer)]
    return tuple(max(1, round(scale * w)) if i in pruned else w for i, w in enumerate(hidden))


def probe_config(c: StudyConfig, target: Sequence[int]) -> StudyConfig:
    """The run that prunes c's start to hidden widths `target` in one step and lets it recover."""
    r = recovery(c)
    return dataclasses.replace(c, schedule="oneshot", target=tuple(target), cycles=2, epochs=r["epochs"],
                               recover_patience=r["patience"], cycle_lr=c.lr * r["lr_factor"], name=None)


def control_config(c: StudyConfig) -> StudyConfig:
    """The probes' equal-budget control: c's start trained at the recovery rate one epoch a cycle, nothing removed
    (cycle E: E epochs more). It keeps its newest checkpoint even under checkpoints="off", so between the search's
    steps each seed's control waits on disk (study.Run.release), not in memory."""
    r = recovery(c)
    return dataclasses.replace(cfg.control_of(c), epochs=1, cycles=r["epochs"] + 1, recover_patience=None,
                               cycle_lr=c.lr * r["lr_factor"],
                               checkpoints="last" if c.checkpoints == "off" else c.checkpoints)


def _check(configs: Sequence[StudyConfig]) -> None:
    for s in configs:
        if not s.start:
            raise ValueError(f"the knee search probes from a trained start, but seed {s.seed}'s config has "
                             "start=None: train one first (study.train_start, or notebook 02) and give its path")
        if s.method in CONTROLS:
            raise ValueError(f"method={s.method!r} is a control: the knee search prunes, so give a criterion "
                             f"({', '.join(cfg.METHODS)})")


class Search:
    """One knee search's bookkeeping over seeds in lockstep: notebook 03's cells run the probes and the loop and hand
    each step here. A context manager: each seed's control run (`controls`) stays open and locked until the end.
    `record` holds a step, `decide(within)` records it with its decision (False: deletes the probes'
    smallest_within_tolerance.pt), and `result()` returns {"rows", "control", "steps", "smallest", "agree", "decided",
    "knee"}."""

    def __init__(self, c: StudyConfig, seeds: Sequence[StudyConfig] = (), data=None):
        self.c, self.configs = c, [c, *[s for s in seeds if s.seed != c.seed]]
        _check(self.configs)
        self.data = data or study.features_when_needed(c)  # data: the features loader the probes share
        self.rows, self.control, self.steps, self._first, self._step = [], [], [], None, None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Search":
        try:
            self.controls = [self._stack.enter_context(study.Run(control_config(s), self.data, quiet=True))
                             for s in self.configs]
            for ctl in self.controls:
                ctl.advance_to(0)
                ctl.release()  # read back when the next step needs it: seeds' controls are not held at once
        except BaseException:  # a kill or an error here must not leave the controls' folders locked
            self._stack.close()
            raise
        r = recovery(self.c)
        reporter.say(f"the knee over {len(self.configs)} seed(s) ({', '.join(str(s.seed) for s in self.configs)}), "
                     f"in lockstep: each probe pruned from its start in one step, then trained at "
                     f"{self.c.lr * r['lr_factor']:g} until validation accuracy has not risen for {r['patience']} "
                     f"epoch(s) (at most {r['epochs']}); its control trained as many epochs, nothing removed")
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def record(self, target: Sequence[int], scale: float, phase: str, runs: Sequence[study.Run],
               controls: Sequence[dict]) -> tuple[list[dict], list[dict]]:
        """Hold a step until `decide`: `runs` (each seed's finished probe) and `controls` (each seed's control row at
        as many epochs). Returns copies of (the probes' pruned rows, the control rows) for the decision to read."""
        if self._first is None:
            self._first = [run.rows[0] for run in runs]
        probes = [(run, run.rows[1]) for run in runs]
        self._step = (tuple(target), scale, phase, probes, list(controls))
        return [dict(row) for _, row in probes], [dict(m) for m in controls]

    def decide(self, within: bool) -> bool:
        """Record the step last probed with its decision; returns `within` as a bool."""
        if self._step is None:
            raise RuntimeError("decide() follows record(): record a step's probes and controls first")
        target, scale, phase, probes, matched = self._step
        self._step, step = None, len(self.steps) + 1
        within = bool(within)
        val, ctl_val = mean(p[1]["val_accuracy"] for p in probes), mean(m["val_accuracy"] for m in matched)
        for (run, row), m, s in zip(probes, matched, self.configs):
            if not within:  # kept by the probe (Run keep_last) in case it was within: it is not
                run.folder.smallest_path.unlink(missing_ok=True)
            tag = {"seed": s.seed, "cycle": step, "step_phase": phase, "scale": scale}
            self.rows.append({**row, **tag})
            self.control.append({**m, **tag, "control_cycle": m["cycle"]})
        self.steps.append({"step": step, "phase": phase, "scale": scale, "widths": Widths(self.rows[-1]["widths"]),
                           "val_accuracy": val, "control_val_accuracy": ctl_val, "within_tolerance": within,
                           "epochs": [p[1]["cycle_epochs"] for p in probes],
                           "paired": paired_on_validation([p[1] for p in probes], matched)})
        kept = ", ".join(str(e) for e in self.steps[-1]["epochs"])
        reporter.say(f"step {step} ({phase}) {Widths(target)}: validation {val:.2%} (mean over {len(self.configs)} "
                     f"seed(s), {kept} epoch(s) kept) against the control's {ctl_val:.2%} trained as long: "
                     + ("within" if within else "more than") + f" {self.c.tolerance:g} point(s) below")
        return within

    def result(self) -> dict:
        c, configs, steps = self.c, self.configs, self.steps
        starts = [{**first, "seed": s.seed, "cycle": 0, "step_phase": "start", "scale": 1.0, "cycle_epochs": 0,
                   "epochs_run": 0} for first, s in zip(self._first or [], configs)]
        start_controls = [{**ctl.rows[0], "seed": s.seed, "cycle": 0, "step_phase": "start", "scale": 1.0,
                           "control_cycle": 0} for ctl, s in zip(self.controls, configs)]
        rows, control = starts + self.rows, start_controls + self.control
        decided = {0: True, **{s["step"]: s["within_tolerance"] for s in steps}}  # the decisions as taken
        smallest = _smallest(rows, decided)
        inside = [s["scale"] for s in steps if s["within_tolerance"]]
        outside = [s for s in steps if not s["within_tolerance"]]
        if inside and outside:  # the bracket: the smallest scale within, the largest outside
            out = max(outside, key=lambda s: s["scale"])
            reporter.say(f"the knee: {smallest['widths']}, within tolerance, and {out['widths']} not (scales "
                         f"{min(inside):.3g} and {out['scale']:.3g}, {min(inside) / out['scale']:.2f}x apart)")
        return {"rows": rows, "control": control, "steps": steps, "smallest": smallest,
                "agree": per_seed_knees(rows, control, c.tolerance), "decided": decided,
                "knee": knee_table(rows, control, c.tolerance, decided=decided)}


def next_scale(lo: float, hi: float | None, fraction: float, resolution: float = cfg.KNEE_RESOLUTION) -> float | None:
    """The knee's next scale (notebook 03's exercise reference). lo: the smallest scale within tolerance (1.0 at
    first); hi: the largest outside (None until a probe falls out). Until then lo x (1 - fraction); after, the
    geometric mean sqrt(lo x hi) until lo / hi <= resolution: None, stop."""
    if hi is None:
        return lo * (1 - fraction)
    if lo / hi <= resolution:
        return None
    return math.sqrt(lo * hi)


def step_within(probes: Sequence[dict], controls: Sequence[dict], tolerance: float) -> bool:
    """A knee step's decision (notebook 03's exercise reference): True when the probes' mean validation accuracy is at
    most `tolerance` points below the controls' (one row per seed each, in the same order)."""
    return within_tolerance(mean(r["val_accuracy"] for r in controls), mean(r["val_accuracy"] for r in probes),
                            tolerance)


def paired_on_validation(probes: Sequence[dict], controls: Sequence[dict]) -> dict | None:
    """Each seed's probe against its own control on its validation images, seeds pooled (stats.pooled): diff (points,
    probe - control) and its 95% margin; None where a row carries no correctness record."""
    from . import records, stats

    pairs = records.paired_rights(probes, controls, "val")
    return None if pairs is None else stats.pooled(*pairs)


def _smallest(rows: Sequence[dict], decided: dict[int, bool]) -> dict:
    """The first seed's row of the step with the fewest parameters among those decided within tolerance."""
    first = rows[0].get("seed", 0)
    return min((r for r in rows if r.get("seed", 0) == first and decided.get(r["cycle"])),
               key=lambda r: (r["parameters"], -r["val_accuracy"]))


def knee_table(rows: Sequence[dict], control: Sequence[dict], tolerance: float,
               scratch: Sequence[dict] = (), decided: dict[int, bool] | None = None) -> list[dict]:
    """One row per seed and step of a knee search, each probe beside its control trained as many epochs: the probe's
    row, control_epochs_total, control_val/test_accuracy, control_val/test_right, tolerance, within_tolerance (against
    its own seed's control), step_within_tolerance (the step's decision on means over seeds, or `decided` as the
    search took it) and smallest (the knee); then a row per seed for the `scratch` heads, beside the probe's control.
    """
    ctl = {(r.get("seed", 0), r["cycle"]): r for r in control}
    if decided is None:  # decided here, on the mean over seeds
        ok = set(in_tolerance(rows, control, tolerance))
        best = smallest_within(rows, control, tolerance)["cycle"]
    else:  # as the search decided them
        ok = {step for step, within in decided.items() if within}
        best = _smallest(rows, decided)["cycle"]

    def beside_control(r: dict) -> dict:
        k = ctl[(r.get("seed", 0), r["cycle"])]
        return {**r, "control_epochs_total": k["epochs_total"], "control_val_accuracy": k["val_accuracy"],
                "control_test_accuracy": k["test_accuracy"], "control_val_right": k.get("val_right", ""),
                "control_test_right": k.get("test_right", ""), "tolerance": tolerance,
                "within_tolerance": within_tolerance(k["val_accuracy"], r["val_accuracy"], tolerance),
                "step_within_tolerance": r["cycle"] in ok,
                "smallest": r["method"] != "scratch" and r["cycle"] == best}

    return [beside_control(r) for r in rows] + [beside_control(r) for r in scratch]


def per_seed_knees(rows: Sequence[dict], control: Sequence[dict], tolerance: float) -> dict[int, str]:
    """{seed: widths of the smallest probe within tolerance judged on that seed alone}: do the seeds agree?"""
    seeds = dict.fromkeys(r.get("seed", 0) for r in rows)
    return {s: smallest_within([r for r in rows if r.get("seed", 0) == s],
                               [r for r in control if r.get("seed", 0) == s], tolerance)["widths"]
            for s in seeds}


def compress_knee(c: StudyConfig, bits: Sequence[int], result: dict, from_scratch: Sequence[dict],
                  seeds: Sequence[StudyConfig] = (), share=None) -> dict:
    """Store the first seed's knee head at `bits`, each file loaded back and scored on validation and test. `result`:
    Search.result(); `from_scratch`: one row per seed of the knee's widths trained from scratch (none when the knee is
    the start; another count or widths raise ValueError). Files are written to <run folder>/compressed.

    Returns `result` plus scratch, knee (`knee_table` with them) and table (per stored file: storage, bytes, ratio to
    the unpruned float32 file, val/test accuracy and right records, control_test_accuracy and control_test_right,
    drop_points (the control's test accuracy minus this file's, in points), path). `share`: fits the codebooks (a
    student's kmeans_share).
    """
    from . import compress

    compress.check_bit_widths(bits)
    best = result["smallest"]
    configs = [c, *[s for s in seeds if s.seed != c.seed]]
    hidden = parse_widths(best["widths"]).hidden
    if best["cycle"] == 0:  # nothing could be removed: the start itself
        head, _ = model.load_head(c.start, fix="train it again (notebook 02, or study.train_start)")
        where, float32_file = RunFolder(control_config(c)).path / "compressed", None
    else:
        folder = RunFolder(probe_config(c, hidden))
        fix = f"move {folder.path} aside and run again to probe those widths anew"
        folder.check_smallest(1)
        head, _ = model.load_head(folder.smallest_path, fix=fix)
        if tuple(head.widths()) != parse_widths(best["widths"]):
            raise ValueError(f"{folder.smallest_path} holds widths {head.widths()}, not the knee's {best['widths']}; "
                             f"{fix}")
        where, float32_file = folder.path / "compressed", folder.smallest_path
    from_scratch = list(from_scratch)
    wanted = len(configs) if best["cycle"] > 0 else 0  # none when the knee is the start itself
    if len(from_scratch) != wanted or any(parse_widths(r["widths"]) != parse_widths(best["widths"])
                                          for r in from_scratch):
        raise ValueError(f"from_scratch must hold {wanted} row(s), one per seed, of the knee's widths "
                         f"{best['widths']} trained from scratch; it holds {len(from_scratch)} of widths "
                         f"{sorted({str(r['widths']) for r in from_scratch})}")
    sets = {s: study.split_features(c, s) for s in ("val", "test")}  # the training set is not needed
    table = compress.compression_table(head, sets, where, result["rows"][0]["model_bytes"], bits,
                                       name=f"knee-{Widths(best['widths'])}", device=c.device,
                                       float32_file=float32_file, share=share)
    reference = next(r for r in result["control"] if r.get("seed", 0) == c.seed and r["cycle"] == best["cycle"])
    for r in table:
        r["control_test_accuracy"] = reference["test_accuracy"]
        r["control_test_right"] = reference.get("test_right", "")
        r["drop_points"] = 100 * (reference["test_accuracy"] - r["test_accuracy"])
    del head
    device.give_back_memory()  # the knee head and the files read back: the notebook's next cells need the memory
    return {**result, "scratch": from_scratch,
            "knee": knee_table(result["rows"], result["control"], c.tolerance, from_scratch, result["decided"]),
            "table": table}


def knee_choice(knee: Sequence[dict]) -> dict:
    """The row notebook 03 kept as the smallest head within tolerance (knee.csv's `smallest` column; the first
    seed's), with val_accuracy, test_accuracy and rho replaced by their means over the seeds of that cycle."""
    rows = [r for r in knee if r.get("smallest") is True]
    if not rows:
        raise ValueError("knee.csv marks no smallest head: run notebook 03 (or knee.compress_knee) again")
    means = {k: mean(float(r[k]) for r in rows) for k in ("val_accuracy", "test_accuracy", "rho")}
    if all("rho_effective" in r for r in rows):
        means["rho_effective"] = mean(float(r["rho_effective"]) for r in rows)
    return {**rows[0], **means, "seeds": len(rows)}
