"""The course questionnaire (Q1-Q10) answered from measurements: one function per question, returning text.

Every answer reads the same tables (notebooks 02-04's results), so answers never contradict each other:
Q7 and Q10 both name the knee search's smallest head within tolerance (chosen on validation against the
equal-budget control), and every "best" is a mean over seeds on validation, with test reported beside it.
"""
from __future__ import annotations

import math
from statistics import mean
from typing import Sequence

from . import capacity_text, metrics, tables
from .config import CLASSES, hidden_text, parse_widths

CHEQUE_ACCURACY = 0.99  # what reading handwritten amounts on cheques is usually said to need


def _pct(x: float) -> str:
    return f"{x:.2%}"


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


def knee_against_controls(knee: Sequence[dict], pick: dict) -> str:
    """The kept head's test accuracy against the unpruned head trained as long and against the same widths from
    scratch (knee.csv's control columns and scratch rows), paired by seed (or by image on one seed), as notebook
    03 states it; '' for the unpruned head."""
    if int(pick["cycle"]) == 0:
        return ""
    n = int(pick["test_total"])
    mine = {r.get("seed", 0): r for r in knee if r["method"] != "scratch" and int(r["cycle"]) == int(pick["cycle"])}
    epochs = [int(r["epochs_total"]) for r in mine.values()]
    control = {s: {"test_accuracy": r["control_test_accuracy"], "test_right": r.get("control_test_right")}
               for s, r in mine.items()}
    lines = [tables.pruning_vs_control(*tables.paired(mine, control, "test")[:2], n, epochs, "test",
                                       tables.paired(mine, control, "test")[2])]
    scratch = {r.get("seed", 0): r for r in knee if r["method"] == "scratch" and r["widths"] == pick["widths"]}
    if scratch:
        a, b, right = tables.paired(mine, scratch, "test")
        hidden = hidden_text(pick["widths"])
        lines.append(tables.pruned_vs_scratch(a, b, n, hidden, [int(r["epochs_total"]) for r in scratch.values()],
                                              "test", right))
    return " ".join(lines) + "\n"


def q1(test: dict, confusion) -> str:
    """The target variable, the accuracy success needs, adversarial examples."""
    worst = min(range(confusion.shape[0]), key=lambda c: float(confusion[c, c] / confusion[c].sum()))
    share = float(confusion[worst, worst] / confusion[worst].sum())
    meets = "meets" if test["accuracy"] >= CHEQUE_ACCURACY else "does not meet"
    return (f"Target: the digit class 0-9 of a 28 x 28 grayscale image ({confusion.shape[0]} classes).\n"
            f"Measured test accuracy of the unpruned head: {_pct(test['accuracy'])} on {test['total']:,} test "
            f"images; chance is {1 / confusion.shape[0]:.0%}. Reading cheques asks for about {CHEQUE_ACCURACY:.0%}: "
            f"this head {meets} that bar.\n"
            f"Adversarial examples push an image across the nearest decision boundary with a change too small to "
            f"see; the class with the least margin here is {worst} ({share:.1%} of its test images correct).")


def q2(counts: dict[str, Sequence[int]], full_train: Sequence[int], test_total: int) -> str:
    """How much data, balance, modalities, noise, bias. counts: images per class of each subset used."""
    used = ", ".join(f"{sum(v):,} {k}" for k, v in counts.items())
    return (f"MNIST: {sum(full_train):,} training and {test_total:,} test images; this profile uses {used} "
            "(the validation images are drawn from the training set, apart from the training subset).\n"
            f"Training images per class: {min(full_train):,} to {max(full_train):,} (largest / smallest = "
            f"{max(full_train) / min(full_train):.2f}): mildly imbalanced; the subsets are drawn class-balanced.\n"
            "One modality (a grayscale image, pixel values 0-255), no temporal information.\n"
            "Noise and bias: the digits come from American census employees and high-school students; "
            "some labels are ambiguous even to people (see the confusion matrix in notebook 02).")


def q3(confusion, between_heads, seeds: tuple[int, int]) -> str:
    """Annotation quality: Cohen's kappa of the model against the labels, and of two heads against each other."""
    c = confusion.double()
    n = c.sum()
    p_o = float(c.diag().sum() / n)
    p_e = float((c.sum(0) * c.sum(1)).sum() / n ** 2)
    kappa = metrics.cohens_kappa(confusion)
    heads = metrics.cohens_kappa(between_heads)
    return (f"MNIST carries one label per image, so no agreement between annotators can be measured from it.\n"
            f"Model against labels: p_o (observed agreement) = {p_o:.4f}, p_e (chance agreement from the two "
            f"marginals) = {p_e:.4f}, Cohen's kappa = (p_o - p_e) / (1 - p_e) = {kappa:.4f}. This measures how far "
            "the head's predictions agree with the labels beyond chance, not how well the data is annotated.\n"
            f"As a stand-in for two annotators, two independently trained heads (seeds {seeds[0]} and {seeds[1]}) "
            f"labelling the same test images agree with kappa = {heads:.4f}.\n"
            f"The report's formula (1 - p_o) / (1 - p_e) would give {(1 - p_o) / (1 - p_e):.4f}: it measures "
            "disagreement and falls as agreement rises. The report never computed kappa.")


def q4(image_bits: int = 28 * 28 * 8, classes: int = CLASSES) -> str:
    """Reducing or inferring information."""
    out = math.log2(classes)
    return (f"Each image carries up to {image_bits:,} bits and the answer log2({classes}) = {out:.2f} bits: the "
            f"learner reduces information by a factor of about {image_bits / out:,.0f}.\n"
            "That is pattern matching on one modality: a convolutional feature extractor with a small classifier "
            "fits.")


def q5(head_mec: int, n_train: int, requirement: Sequence[dict], knee_row: dict | None,
       ladder: Sequence[dict] | None = None, head_mec_effective: int | None = None, map_size: int = 1,
       tolerance: float = 1.0, head_size: Sequence[dict] | None = None) -> str:
    """The capacity needed (thresholds estimate and the measured ladder), the expected generalization, the progression.

    ladder: memorization.measure_requirement rows (requirement_ladder.csv); head_mec_effective: the head's MEC on
    its distinct inputs (capacity.mec_effective_of), which the comparisons use when given; head_size:
    head_size.csv's rows (labkit.headsize), whose knee and ladder heads the answer cites.
    """
    label_bits = n_train * math.log2(CLASSES)
    effective = head_mec_effective or head_mec
    lines = [f"The head: {capacity_text.mec_both(head_mec, effective, map_size)}. Memorizing {n_train:,} labels "
             f"outright needs at most {label_bits:,.0f} bits, so the head has {effective / label_bits:,.0f} times "
             "what a lookup table needs."]
    for name in dict.fromkeys(r["representation"] for r in requirement):
        prog = [r for r in requirement if r["representation"] == name]
        lines.append("Capacity the labels need, thresholds estimate, " + capacity_text.requirement_sentence(name, prog))
    if ladder:
        lines.append(capacity_text.ladder_sentence(ladder, tolerance, effective, label_bits))
    if head_size:
        knee, ladder_head = _answer(head_size, "structured knee"), _answer(head_size, "the ladder's smallest")
        lines.append(f"How big the head must be (head_size.csv, seed 0): the structured knee of notebook 03 is "
                     f"{hidden_text(knee['widths'])} ({knee['parameters']:,} parameters, MEC {knee['mec_bits']:,} "
                     f"bits, {knee['mec_effective_bits']:,} effective); the ladder's smallest head within tolerance "
                     f"is {ladder_head['widths']} ({ladder_head['parameters']:,} parameters, MEC "
                     f"{ladder_head['mec_bits']:,} bits). The knee says how far the trained head can be cut and "
                     "recover, the ladder how small a fresh head on the distinct features can be.")
        gaps = [100 * (float(r["test_accuracy"]) - float(r["val_accuracy"])) for r in head_size
                if r.get("val_accuracy") not in (None, "") and r.get("test_accuracy") not in (None, "")]
        side = ("higher" if min(gaps) > 0 else "lower" if max(gaps) < 0 else None) if gaps else None
        lines.append(f"Expected generalization: validation accuracy is the estimate, and test checks it. The knee: "
                     f"{_pct(knee['val_accuracy'])} on validation, {_pct(knee['test_accuracy'])} on test; the "
                     f"ladder's head: {_pct(ladder_head['val_accuracy'])} and {_pct(ladder_head['test_accuracy'])}. "
                     + (f"Every head of head_size.csv scores {min(map(abs, gaps)):.2f} to {max(map(abs, gaps)):.2f} "
                        f"points {side} on test than on validation: the gap has one sign for every head, so it "
                        "belongs to the two image sets (validation is drawn from MNIST's training images, test from "
                        "its test images), not to any head: read here, validation "
                        + ("underestimates" if side == "higher" else "overestimates") + " test accuracy by about "
                        "that much. Why the sets differ, this lab does not test."
                        if side else "The gap between the two splits changes sign from head to head."))
    elif knee_row is not None:
        lines.append(f"Expected generalization: the knee of notebook 03 ({knee_row['widths']}, MEC "
                     f"{knee_row['mec_bits']:,} bits) reached {_pct(knee_row['val_accuracy'])} on validation and "
                     f"{_pct(knee_row['test_accuracy'])} on test.")
    return "\n".join(lines)


def _answer(head_size: Sequence[dict], name: str) -> dict:
    """The row of head_size.csv whose head starts with `name`."""
    try:
        return next(r for r in head_size if str(r["head"]).startswith(name))
    except StopIteration:
        raise ValueError(f"head_size.csv has no row for {name!r}: run notebook 03 again") from None


def q6(record: dict, test: dict, head_mec: int, n_train: int, weights: str,
       memorization: Sequence[dict] | None = None, head_mec_effective: int | None = None) -> str:
    """Memorization at memory-equivalent capacity: the trained head, and the random-label measurement.

    memorization: memorization.memorize_random_labels rows (memorization.csv).
    """
    kept = int(record.get("best_epoch") or len(record["epochs"]))
    at = next((e for e in record["epochs"] if e.get("epoch") == kept), record["epochs"][-1])
    label_bits = n_train * math.log2(CLASSES)
    effective = head_mec_effective or head_mec
    why = " (random weights: ImageNet weights were not available)." if weights != "imagenet" else "."
    lines = [f"Training accuracy at the epoch kept, {kept} of {len(record['epochs'])} run (early stopping on "
             f"validation): {_pct(at['accuracy'])} (dropout on); validation {_pct(record['val']['accuracy'])}, test "
             f"{_pct(test['accuracy'])}."]
    if memorization:
        criterion = memorization[0]["criterion"]
        lines += [f"Measured with uniformly random labels (nothing to generalize), the most training images each "
                  f"small head fitted to {criterion:.0%} training accuracy:",
                  *("  " + line for line in capacity_text.memorization_lines(memorization)),
                  capacity_text.twin_sentence(memorization), capacity_text.memorization_bound(memorization)]
        every = [r for r in memorization if capacity_text.yes(r["all_images"])]
        if every:
            small = min(every, key=lambda r: r["mec_effective_bits"])
            lines.append(f"So near 100% memorization is within reach: {small['head']} ({small['mec_effective_bits']:,} "
                         f"bits of effective MEC) already fitted all {small['images_memorized']:,} random labels at "
                         f"{small['accuracy_at']:.1%}, and the unpruned head has {effective:,} effective bits for "
                         f"{label_bits:,.0f} bits of labels.")
        else:
            lines.append(f"No small head fitted every random label; the unpruned head has {effective:,} effective "
                         f"bits for {label_bits:,.0f} bits of labels, so capacity is not its limit.")
    else:
        lines.append(f"With {effective:,} bits for {label_bits:,.0f} bits of labels, capacity is not the limit: more "
                     "epochs would memorize the training set.")
    lines.append("What limits accuracy on real labels was not tested here. Capacity is not it (above); the frozen "
                 "backbone's features" + why.rstrip(".") + " are the likely suspect, and the test would be to train "
                 "the same heads on other features and compare.")
    return "\n".join(lines)


def q7(curve: Sequence[dict], knee: Sequence[dict], tolerance: float, head_size: Sequence[dict] | None = None) -> str:
    """Where to stop on the accuracy / capacity curve, and what to expect there (the knee as head_size.csv
    gives it, when given)."""
    best = tables.best_point(curve)
    pick = knee_choice(knee)
    pruned = [r for r in knee if r["method"] not in tables.CONTROLS]
    scale = float(pick.get("scale", 1.0) or 1.0)
    beyond = sorted((r for r in pruned if not capacity_text.yes(r["step_within_tolerance"])
                     and float(r.get("scale", 0)) < scale and r.get("seed", 0) == pick.get("seed", 0)),
                    key=lambda r: -float(r.get("scale", 0)))
    seeds = best["seeds"]
    report_first = 4096 - 500  # the 2019 schedule's last first-layer width
    first = parse_widths(pick["widths"])[1]
    where = ("far from where accuracy starts to fall" if first < report_first / 2 else
             "close to where accuracy starts to fall")
    lines = [f"The curve is in notebook 04. Among the pruned heads and the unpruned head trained as long, the "
             f"highest mean validation accuracy over {seeds} seed(s) is "
             f"{tables.arm_name(best['method'])} at cycle {best['cycle']} ({_mecs(best)}, "
             f"{tables.plural_epochs(best.get('epochs_each', best['epochs_total']))}): validation {_pct(best['val_accuracy'])}, test "
             f"{_pct(best['test_accuracy'])}, rho {best['rho']:.3g}. " + tables.best_against_control(curve, best)
             + _scratch_above(curve, best),
             f"The report's schedule stops at {report_first:,} first-layer neurons, {where}: the knee of notebook "
             f"03 keeps {first:,}.",
             f"Where to stop is another question: the smallest head that gives up at most {tolerance:g} point(s) "
             f"of validation accuracy against the unpruned head trained as long. Notebook 03 probed ever smaller "
             f"heads, each pruned in one step and recovered, until it found the widths within about 15%: stop at "
             f"{hidden_text(pick['widths'])} ({_mecs(pick)}). There expect about its validation accuracy, "
             f"{_pct(pick['val_accuracy'])} (the mean over {pick['seeds']} seed(s); measured on test: "
             f"{_pct(pick['test_accuracy'])}), and rho = {pick['rho']:.3g} on the nominal MEC"
             + (f", {pick['rho_effective']:.3g} on the effective one." if pick.get("rho_effective") else ".")]
    if beyond:
        step = [r for r in pruned if int(r["cycle"]) == int(beyond[0]["cycle"])]
        val, ctl = (mean(float(r[k]) for r in step) for k in ("val_accuracy", "control_val_accuracy"))
        from .knee import paired_on_validation
        pooled = paired_on_validation(step, [{"val_right": r.get("control_val_right"), "val_total": r["val_total"]}
                                             for r in step])
        lines.append(f"Why not smaller: the next smaller head probed, {hidden_text(beyond[0]['widths'])}, reached "
                     f"{_pct(val)} on validation (the mean over {len(step)} seed(s)) against its controls' "
                     f"{_pct(ctl)}, more than {tolerance:g} point(s) below"
                     + (f" ({pooled['diff']:+.2f} points, 95% margin ±{pooled['margin']:.2f} over the seeds' "
                        f"{pooled['n']:,} validation images paired and pooled)." if pooled else "."))
    if head_size:
        k, lad = _answer(head_size, "structured knee"), _answer(head_size, "the ladder's smallest")
        lines.append(f"head_size.csv sets the knee ({hidden_text(k['widths'])}, {k['parameters']:,} parameters) beside "
                     f"the ladder's smallest head within tolerance ({lad['widths']}, {lad['parameters']:,}): a head "
                     "trained fresh on the distinct features can be far smaller than one cut from the trained head.")
    return "\n".join(lines)


def _scratch_above(curve: Sequence[dict], best: dict) -> str:
    """Where a from-scratch control's mean validation accuracy is higher than the best pruned point's, say so:
    the best point is the best of the pruned heads and the equal-budget control, not of every arm."""
    fresh = [r for r in tables.curve_summary(curve) if r["method"] == "scratch"]
    top = max(fresh, key=lambda r: r["val_accuracy"], default=None)
    if top is None or top["val_accuracy"] <= best["val_accuracy"]:
        return ""
    return (f" The same widths trained from scratch (the other control, cycle {top['cycle']}) reached "
            f"{_pct(top['val_accuracy'])} on validation, higher still: the highest point is the best of the pruned "
            "heads and the unpruned head trained as long, not of every arm.")


def q8(test: dict, head_mec: int, start_accuracies: Sequence[float], head_mec_effective: int | None = None) -> str:
    """How well the prediction held on independent test data, how confident to be, rho on both MECs."""
    n, p = test["total"], test["accuracy"]
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    lines = [f"Test accuracy {_pct(p)} ± {half:.2%} (95% binomial interval, {n:,} images); the validation set "
             "made every choice, so the test figure is an unbiased estimate of it."]
    if len(start_accuracies) > 1:
        lines.append(f"Across {len(start_accuracies)} independently trained heads: {_pct(min(start_accuracies))} to "
                     f"{_pct(max(start_accuracies))} (mean {_pct(mean(start_accuracies))}).")
    lines.append(capacity_text.rho_both(test["correct"], head_mec, head_mec_effective or head_mec))
    return "\n".join(lines)


def q9(methods: Sequence[str]) -> str:
    """Combining the models of several modalities."""
    shown = [m for m in methods if m not in tables.CONTROLS]
    return (f"There is one modality, so there is nothing to combine across modalities. The {len(shown)} pruned "
            f"variants ({', '.join(shown)}) are one model at different sizes, not separate experts.")


def _mecs(row: dict) -> str:
    """A row's MEC on its nominal inputs and, where it differs, on its distinct inputs (the inputs repeat)."""
    nominal, effective = int(row["mec_bits"]), int(row.get("mec_effective_bits") or row["mec_bits"])
    if nominal == effective:
        return f"MEC {nominal:,} bits"
    return (f"MEC {nominal:,} bits nominal, {effective:,} on its distinct inputs (its 25,088 inputs repeat: "
            "the effective MEC)")


def q10(test: dict, head_mec: int, kappa: float, knee: Sequence[dict], stored: Sequence[dict], profile: str,
        head_mec_effective: int | None = None, head_size: Sequence[dict] | None = None) -> str:
    """The final results, documented and repeatable (the heads of head_size.csv, when given)."""
    pick = knee_choice(knee)
    small = tables.smallest_stored(stored)
    unpruned = _mecs({"mec_bits": head_mec, "mec_effective_bits": head_mec_effective})
    return (f"Unpruned head: {_pct(test['accuracy'])} test accuracy, {unpruned}, kappa against the labels "
            f"{kappa:.3f}.\n"
            f"Smallest head kept (notebook 03's knee, the stopping point of Q7): {pick['widths']}, "
            f"{_mecs(pick)}, test accuracy {_pct(pick['test_accuracy'])} (the mean over {pick['seeds']} seed(s)); "
            f"seed 0's stored as {small['storage']} "
            f"in {small['bytes']:,} bytes ({small['bytes'] / 1e6:.1f} MB, {small['ratio']:.0f}x less than the "
            f"unpruned float32 head), test accuracy {_pct(small['test_accuracy'])} read back from the file.\n"
            + knee_against_controls(knee, pick) + _head_size_line(head_size) +
            f"Every number here comes from results/{profile}/; reruns from the same seeds give the same values on a "
            "CPU (tested). On a GPU the lab trains under bf16 autocast; no GPU run of the lab has been measured, so "
            "how far its numbers would move there is not known. Rerun with: python -m labkit lab "
            f"--profile {profile}")



def _head_size_line(head_size: Sequence[dict] | None) -> str:
    """One line per answer of head_size.csv: parameters, the smallest file, test accuracy (seed 0)."""
    if not head_size:
        return ""
    parts = [f"{r['head']} {r['widths']}: {int(r['parameters']):,} parameters, "
             f"{int(r['bytes_smallest']) / 1e6:,.2f} MB, test {_pct(float(r['test_accuracy']))}" for r in head_size]
    return "How big the head must be, the lab's answers side by side (head_size.csv, seed 0): " + "; ".join(parts) + ".\n"


# ---------------------------------------------------------------- the numbers beside each answer (notebook 05)

def numbers(question: str, a: dict) -> list[dict]:
    """The measured numbers a student answers `question` ("q1" .. "q10") from, as rows (measured, value), read
    from `a`, the dict `inputs` returns."""
    from statistics import stdev

    from . import capacity

    test, knee = a["test"], knee_choice(a["knee"]) if a.get("knee") else {}
    rho = capacity.generalization_ratio(test["correct"], a["mec_bits"])
    stored = sorted(a.get("stored") or [], key=lambda r: r["bytes"])
    facts = {
        "q1": {"classes": CLASSES, "test accuracy": f"{test['accuracy']:.2%}",
               "test images right": f"{test['correct']:,} of {test['total']:,}"},
        "q2": {"images used (train / validation / test)": " / ".join(f"{sum(v):,}" for v in a["counts"].values()),
               "MNIST training images per class (fewest, most)":
                   f"{min(a['full_train_counts']):,}, {max(a['full_train_counts']):,}"},
        "q3": {"Cohen's kappa, head against labels": f"{metrics.cohens_kappa(a['confusion']):.4f}",
               "Cohen's kappa, two heads against each other": f"{metrics.cohens_kappa(a['between_heads']):.4f}"},
        "q4": {"training images": f"{a['n_train']:,}", "head MEC (bits)": f"{a['mec_bits']:,}",
               "training images per bit of MEC": f"{a['n_train'] / a['mec_bits']:.2e}"},
        "q5": {"head MEC, nominal / effective (bits)": f"{a['mec_bits']:,} / {a['mec_effective_bits']:,}",
               **{f"thresholds estimate, {r['representation']}: expected bits": f"{r['expected_bits']:,}"
                  for r in a["requirement"] if r.get("fraction") == 1.0},
               "ladder's smallest head within tolerance": next((str(r["head"]) for r in a["requirement_ladder"]
                                                                 if r.get("chosen")), "-")},
        "q6": {"training accuracy, last epoch of the start": f"{a['record']['epochs'][-1]['accuracy']:.2%}",
               **{f"random labels memorized, {r['head']}": f"{r['images_memorized']:,} images"
                  for r in a["memorization"]}},
        "q7": {"knee widths (03)": str(knee.get("widths", "-")),
               "knee validation / test accuracy": (f"{knee['val_accuracy']:.2%} / {knee['test_accuracy']:.2%}"
                                                   if knee else "-")},
        "q8": {"test accuracy": f"{test['accuracy']:.2%}",
               "start's test accuracy over seeds (mean, sd)": (
                   f"{mean(a['start_accuracies']):.2%}, {stdev(a['start_accuracies']) * 100:.2f} points"
                   if len(a["start_accuracies"]) > 1 else "one seed"),
               "rho, nominal / effective MEC": f"{rho:.3g} / "
               f"{capacity.generalization_ratio(test['correct'], a['mec_effective_bits']):.3g}"},
        "q9": {"pruning criteria compared": ", ".join(sorted({r["method"] for r in a["compare"]}))},
        "q10": {"test accuracy": f"{test['accuracy']:.2%}", "smallest stored file": (
                    f"{stored[0]['storage']}, {stored[0]['bytes']:,} bytes" if stored else "-"),
                "profile": a.get("profile", "-")},
    }
    if question not in facts:
        raise ValueError(f"question must be one of q1 .. q10, not {question!r}")
    return [{"measured": k, "value": v} for k, v in facts[question].items()]


NEEDS = {"03_prune_compare": ("prune_compare", "knee", "compression", "head_size"),
         "04_capacity_curve": ("capacity_curve", "data_requirement", "memorization", "requirement_ladder")}


def inputs(session, seed: int = 0) -> dict:
    """What notebook 05's answers read: the tables notebooks 03 and 04 wrote in results/<profile>/ (an error naming
    those missing and how to make them), and the trained heads of `seed` and `seed + 1` (notebooks 02 and 04's,
    trained now where missing)."""
    import dataclasses

    import torch

    from . import capacity, data, study, train
    from . import config as cfg

    tables = {name: session.saved_table(name) for names in NEEDS.values() for name in names}
    missing = {nb: [n for n in names if tables[n] is None] for nb, names in NEEDS.items()}
    missing = {nb: names for nb, names in missing.items() if names}
    if missing:
        raise RuntimeError(f"notebook 05 answers from what notebooks 03 and 04 measured, and {session.folder} lacks "
                           + "; ".join(f"{', '.join(n + '.csv' for n in names)} ({nb})" for nb, names in missing.items())
                           + f": run them first (python -m labkit lab --profile {session.profile} --only "
                           + " ".join(missing) + ", or make lab)")
    heads = []
    for s in (seed, seed + 1):  # seed + 1: a second rater for Q3
        if not session.start_path(s).exists():
            print(f"No trained head at {session.start_path(s)}; training one now ({session.profile!r} profile).")
        heads.append(study.train_start(dataclasses.replace(session.config, seed=s), session.start_path(s)))
    (head, record), (other, _) = heads
    splits = study.prepare_features(session.config)
    test = train.evaluate(head, splits.test, return_predictions=True)
    second = train.evaluate(other, splits.test, return_predictions=True)
    curve, knee = tables["capacity_curve"], tables["knee"]
    return {"memorization": tables["memorization"], "requirement_ladder": tables["requirement_ladder"],
            "mec_effective_bits": capacity.mec_effective_of(head), "map_size": head.map_size,
            "record": record, "test": test, "weights": splits.train.weights, "n_train": len(splits.train),
            "confusion": metrics.confusion_matrix(splits.test.labels, test["predictions"]),
            "between_heads": metrics.confusion_matrix(test["predictions"], second["predictions"]),
            "counts": study.class_counts(session.config),
            "full_train_counts": torch.bincount(data.Subsets(dataset=session.config.dataset).load("train")[1],
                                                minlength=cfg.CLASSES).tolist(),
            "mec_bits": capacity.mec_of(head), "compare": tables["prune_compare"], "curve": curve, "knee": knee,
            "stored": tables["compression"], "requirement": tables["data_requirement"],
            "start_accuracies": [r["test_accuracy"] for r in curve if r["method"] == "none" and r["cycle"] == 0],
            "head_size": tables["head_size"], "tolerance": float(knee[0]["tolerance"])}
