"""Sentences about capacity, counted and measured, that notebooks 04 and 05 both print (what the labels need,
what the heads memorized, the ladder); as in `labkit.tables`, each says only what its numbers support.
"""
from __future__ import annotations

from typing import Sequence

# ---------------------------------------------------------------- what the labels need

GROWS_WITH_DATA = 0.8  # a log-log slope above this counts as growing in step with the data


def requirement_sentence(name: str, rows: Sequence[dict], head_mec: int | None = None) -> str:
    """What a thresholds-method progression (capacity.requirement_progression) says, in one sentence."""
    from .capacity import progression_slope

    slope = progression_slope(rows)
    full = rows[-1]
    shape = ("grows in step with the data: every new image brings new thresholds, so through this projection the "
             "labels look memorized rather than ruled" if slope > GROWS_WITH_DATA else
             "grows more slowly than the data: new images add fewer thresholds, a sign of regularity")
    said = (f"{name}: {full['thresholds']:,} thresholds for {full['n']:,} images, expected {full['expected_bits']:,} "
            f"bits, max {full['max_bits']:,} bits; log-log slope {slope:.2f} over the last half of the images: it "
            f"{shape}.")
    if head_mec is not None:
        if head_mec > full["max_bits"]:
            said += f" The head's {head_mec:,} bits of MEC are more than even the max requirement."
        elif head_mec > full["expected_bits"]:
            said += (f" The head's {head_mec:,} bits of MEC lie between the two: below the max requirement, "
                     f"{head_mec / full['expected_bits']:,.0f}x the expected one.")
        else:
            said += f" The head's {head_mec:,} bits of MEC are less than even the expected requirement."
    return said


# ---------------------------------------------------------------- capacity counted, then measured

TWIN_TOLERANCE = 0.25  # a twin on repeated inputs within 25% of its one-copy head's count lands where it does


def yes(value) -> bool:
    """A flag as rows hold it: a bool, or read back from a CSV as "True"."""
    return str(value) == "True"


def mec_both(nominal: int, effective: int, map_size: int) -> str:
    """The head's MEC counted on its 25,088 inputs and on its distinct inputs, saying why they differ (or agree)."""
    from .capacity import distinct_positions, effective_inputs

    if nominal == effective:
        return (f"MEC {nominal:,} bits by the four rules (at a {map_size} x {map_size} backbone map the head's "
                "inputs are distinct, so counting only distinct inputs gives the same)")
    side = f"{map_size} x {map_size}"
    how = ("each of the 512 features is copied 49 times" if distinct_positions(map_size) == 1 else
           f"its 49 pooled positions mix {distinct_positions(map_size)} distinct ones")
    return (f"MEC {nominal:,} bits by the four rules on its 25,088 inputs, but those inputs repeat (a {side} backbone "
            f"map: {how}), and a layer's weights on copies of one input act only through their sum; on its "
            f"{effective_inputs(map_size):,} distinct inputs the head has {effective:,} bits (effective MEC, "
            f"{nominal / effective:.0f}x less)")


def memorization_lines(rows: Sequence[dict]) -> list[str]:
    """One line per head of memorization.csv: images of random labels memorized, bits stored, both MECs."""
    lines = []
    for r in rows:
        every = " (every image there was, so at least that)" if yes(r["all_images"]) else ""
        repeated = r["mec_bits"] != r["mec_effective_bits"]
        nominal = f"; nominal {r['mec_bits']:,} bits, its inputs counted as distinct" if repeated else ""
        n = r["images_memorized"]
        lines.append(f"{r['head']}: {n:,} image{'' if n == 1 else 's'}{every} at {r['accuracy_at']:.1%} training "
                     f"accuracy, {r['bits_stored']:,} bits stored, {r['bits_stored'] / r['mec_effective_bits']:.2f} "
                     f"of its effective MEC of {r['mec_effective_bits']:,} bits{nominal}.")
    return lines


def twin_sentence(rows: Sequence[dict]) -> str:
    """Where each head on repeated inputs (copies > 1) landed against the same head reading each feature once."""
    twins = [r for r in rows if int(r.get("copies", 1)) > 1]
    if not twins:
        return "No head read repeated inputs: at this image size the backbone's map makes no copies to count."
    said = []
    for t in twins:
        base = next(r for r in rows if int(r.get("copies", 1)) == 1 and r["mec_bits"] == t["mec_effective_bits"])
        n, m = t["images_memorized"], base["images_memorized"]
        head = (f"The twin {t['head']} has {t['mec_bits'] / base['mec_bits']:.0f}x the nominal MEC of {base['head']} "
                f"({t['mec_bits']:,} against {base['mec_bits']:,} bits), so the four rules on its inputs as read "
                f"predict it memorizes about that many times more; it memorized {n:,} images against {m:,}")
        if yes(t["all_images"]) and yes(base["all_images"]):
            said.append(head + ": both fitted every image there was, so these images cannot tell them apart.")
        elif abs(n / m - 1) <= TWIN_TOLERANCE:
            said.append(head + f" ({n / m:.2f} times): it lands where its one-copy twin does, as their equal "
                               f"effective MEC ({t['mec_effective_bits']:,} bits) says.")
        else:
            said.append(head + f" ({n / m:.2f} times): more than {TWIN_TOLERANCE:.0%} apart, yet far from the "
                               f"{t['mec_bits'] / base['mec_bits']:.0f}x the nominal MEC predicts.")
    return " ".join(said)


def memorization_bound(rows: Sequence[dict]) -> str:
    """Whether any head stored more bits of random labels than its effective MEC (the count as an upper bound)."""
    over = [r for r in rows if r["bits_stored"] > r["mec_effective_bits"]]
    if not over:
        return ("No head stored more bits than its effective MEC: the four rules, counted on distinct inputs, held as "
                "an upper bound on what training memorized here.")
    return (f"{', '.join(r['head'] for r in over)} stored more bits than {'its' if len(over) == 1 else 'their'} "
            "effective MEC (up to MacKay's 2 bits per parameter is possible): the four rules are then no upper bound.")


def ladder_sentence(rows: Sequence[dict], tolerance: float, head_effective: int | None = None,
                    label_bits: float | None = None) -> str:
    """What notebook 04's ladder on real labels measured: the smallest head within `tolerance` of the best, an upper
    bound on the capacity the labels need; `label_bits`: what memorizing the training labels outright would take."""
    best = max(rows, key=lambda r: r["val_accuracy"])
    pick = next(r for r in rows if yes(r["chosen"]))
    linear = next((r for r in rows if int(r["hidden"]) == 0), None)
    pts = "point" if tolerance == 1 else "points"
    said = (f"Measured on the real labels: heads of growing width trained on the training images reach at best "
            f"{best['val_accuracy']:.2%} on validation ({best['head']}); ")
    if int(pick["hidden"]) == 0:
        said += (f"a linear classifier on the features ({pick['mec_effective_bits']:,} bits of MEC) is within "
                 f"{tolerance:g} {pts} of that, at {pick['val_accuracy']:.2%}.")
    else:
        lin = f"; a linear classifier reaches {linear['val_accuracy']:.2%}" if linear else ""
        said += (f"the smallest within {tolerance:g} {pts} of it is {pick['head']} "
                 f"({pick['mec_effective_bits']:,} bits of MEC, {pick['val_accuracy']:.2%}){lin}.")
    said += f" So {pick['mec_effective_bits']:,} bits of MEC suffice to generalize the labels this well"
    if label_bits is not None and pick["mec_effective_bits"] > label_bits:
        said += (f"; that is more than the {label_bits:,.0f} bits a lookup of the training labels takes, so MEC "
                 "here counts capacity the head does not need to store: it bounds the need from above")
    said += "."
    if head_effective:
        said += f" The unpruned head's effective MEC is {head_effective / pick['mec_effective_bits']:,.0f}x that."
    return said
