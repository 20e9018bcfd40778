"""What notebook 05's answers read: `inputs` (the tables notebooks 03 and 04 wrote, the trained heads), `numbers`
(the measured numbers beside each question) and `knee_choice`. The answers themselves, Q1-Q10, are f-strings in
notebook 05's cells, beside those numbers.

Every answer reads the same tables, so answers never contradict each other: Q7 and Q10 both name the knee
search's smallest head within tolerance (chosen on validation against the equal-budget control), and every
"best" is a mean over seeds on validation, with test reported beside it.
"""
from __future__ import annotations

from statistics import mean
from typing import Sequence

from . import metrics
from .config import CLASSES


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

    saved = {name: session.saved_table(name) for names in NEEDS.values() for name in names}
    missing = {nb: [n for n in names if saved[n] is None] for nb, names in NEEDS.items()}
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
    curve, knee = saved["capacity_curve"], saved["knee"]
    return {"memorization": saved["memorization"], "requirement_ladder": saved["requirement_ladder"],
            "mec_effective_bits": capacity.mec_effective_of(head), "map_size": head.map_size,
            "record": record, "test": test, "weights": splits.train.weights, "n_train": len(splits.train),
            "confusion": metrics.confusion_matrix(splits.test.labels, test["predictions"]),
            "between_heads": metrics.confusion_matrix(test["predictions"], second["predictions"]),
            "counts": study.class_counts(session.config),
            "full_train_counts": torch.bincount(data.Subsets(dataset=session.config.dataset).load("train")[1],
                                                minlength=cfg.CLASSES).tolist(),
            "mec_bits": capacity.mec_of(head), "compare": saved["prune_compare"], "curve": curve, "knee": knee,
            "stored": saved["compression"], "requirement": saved["data_requirement"],
            "start_accuracies": [r["test_accuracy"] for r in curve if r["method"] == "none" and r["cycle"] == 0],
            "head_size": saved["head_size"], "tolerance": float(knee[0]["tolerance"])}
