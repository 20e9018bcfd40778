"""Sentences about capacity counted and measured (Q5, Q6, Q8 and their helpers) and Q1, Q2, Q4, Q9, one test per
branch, made-up rows and figures worked out by hand."""
import torch

import notebook_cells
from labkit import capacity, capacity_text

ANSWERS = notebook_cells.definitions("05_questionnaire")  # Q1-Q10 as notebook 05 writes them

NOMINAL, EFFECTIVE = capacity.mec([25088, 4096, 4096, 256, 10]), capacity.mec([512, 4096, 4096, 256, 10])


def _mem_row(hidden, n, copies=1, all_images=False, accuracy=0.95, criterion=0.9):
    inputs = 512 * copies
    return {"head": f"{inputs}-{hidden}-10" + (f" (512 x {copies} repeated)" if copies > 1 else ""),
            "widths": (inputs, hidden, 10), "inputs": inputs, "copies": copies,
            "parameters": capacity.parameter_count([inputs, hidden, 10]),
            "mec_bits": capacity.mec([inputs, hidden, 10]), "mec_effective_bits": capacity.mec([512, hidden, 10]),
            "images_memorized": n, "all_images": all_images, "criterion": criterion, "accuracy_at": accuracy,
            "bits_stored": round(n * 2.9)}


def _ladder(chosen_hidden):
    rows = [{"head": "512-10", "hidden": 0, "mec_bits": 5_130, "mec_effective_bits": 5_130, "val_accuracy": 0.90},
            {"head": "512-8-10", "hidden": 8, "mec_bits": 4_112, "mec_effective_bits": 4_112, "val_accuracy": 0.87},
            {"head": "512-64-10", "hidden": 64, "mec_bits": 32_896, "mec_effective_bits": 32_896,
             "val_accuracy": 0.915}]
    for r in rows:
        r["chosen"] = r["hidden"] == chosen_hidden
    return rows


# ---------------------------------------------------------------- helpers in report

def test_mec_both_says_the_inputs_repeat_at_32_px():
    text = capacity_text.mec_both(NOMINAL, EFFECTIVE, 1)
    assert "102,772,992" in text and "repeat" in text and "copied 49 times" in text and "2,109,696" in text
    assert "49x less" in text


def test_mec_both_between_sizes_and_at_224_px():
    at_64 = capacity_text.mec_both(NOMINAL, capacity.mec_effective([25088, 4096, 4096, 256, 10], 2), 2)
    assert "mix 4 distinct ones" in at_64 and "2,048 distinct inputs" in at_64
    same = capacity_text.mec_both(NOMINAL, NOMINAL, 7)
    assert "distinct" in same and "gives the same" in same and "repeat" not in same


def test_memorization_lines_name_images_bits_and_both_mecs():
    lines = capacity_text.memorization_lines([_mem_row(8, 1100), _mem_row(32, 2000, all_images="True"),
                                       _mem_row(8, 1000, copies=49)])
    assert lines[0].startswith("512-8-10: 1,100 images at 95.0%") and "4,112 bits" in lines[0]
    assert "nominal" not in lines[0]
    assert "every image there was" in lines[1]
    assert "nominal 200,720 bits" in lines[2]


def test_twin_lands_where_its_one_copy_head_does():
    text = capacity_text.twin_sentence([_mem_row(8, 1100), _mem_row(8, 1000, copies=49)])
    assert "memorized 1,000 images against 1,100" in text and "0.91 times" in text
    assert "lands where its one-copy twin does" in text and "49x the nominal MEC" in text


def test_twin_further_apart_says_so():
    text = capacity_text.twin_sentence([_mem_row(8, 1100), _mem_row(8, 700, copies=49)])
    assert "more than 25% apart" in text and "far from the 49x" in text


def test_twin_and_its_head_both_at_every_image():
    text = capacity_text.twin_sentence([_mem_row(8, 600, all_images=True),
                                        _mem_row(8, 600, copies=49, all_images="True")])
    assert "cannot tell them apart" in text


def test_no_twin_measured():
    assert "makes no copies" in capacity_text.twin_sentence([_mem_row(8, 100)])


def test_memorization_bound_both_branches():
    assert "held as an upper bound" in capacity_text.memorization_bound([_mem_row(8, 1000)])
    over = _mem_row(1, 500)  # 1,450 bits stored against 514 bits of MEC
    text = capacity_text.memorization_bound([over, _mem_row(8, 1000)])
    assert text.startswith("512-1-10 stored more bits than its effective MEC")


def test_ladder_sentence_linear_and_hidden_choices():
    linear = capacity_text.ladder_sentence(_ladder(0), 2.0)
    assert "a linear classifier on the features (5,130 bits" in linear and "within 2 points" in linear
    assert "So 5,130 bits of MEC suffice" in linear
    over = capacity_text.ladder_sentence(_ladder(64), 1.0, label_bits=6644)
    assert "more than the 6,644 bits a lookup of the training labels takes" in over
    hidden = capacity_text.ladder_sentence(_ladder(64), 1.0, head_effective=EFFECTIVE)
    assert "the smallest within 1 point of it is 512-64-10 (32,896 bits" in hidden
    assert "a linear classifier reaches 90.00%" in hidden and "64x that" in hidden


def _q8_rho(correct, nominal, effective):
    return ANSWERS.q8({"total": 10_000, "accuracy": correct / 10_000, "correct": correct}, nominal, [0.9],
                      effective).splitlines()[-1]


def test_q8_states_rho_below_and_above_one():
    low = _q8_rho(1800, NOMINAL, EFFECTIVE)
    assert "0.00085" in low and "49x higher: the inputs repeat" in low and "cannot prove it" in low
    high = _q8_rho(9000, 100_000, 5_000)
    assert "1.8 on the effective MEC" in high and "proves here" in high
    assert "on the effective" not in _q8_rho(100, 1000, 1000)


# ---------------------------------------------------------------- the answers

def _record():
    return {"epochs": [{"accuracy": 0.95}], "val": {"accuracy": 0.9}}


def test_q5_gives_thresholds_and_the_measured_ladder():
    requirement = [{"representation": "features", "fraction": f, "n": round(2000 * f), "thresholds": round(1800 * f),
                    "max_bits": round(9e5 * f), "expected_bits": round(1e4 * f)} for f in (0.05, 0.1, 0.2, 0.4, 1.0)]
    text = ANSWERS.q5(NOMINAL, 2000, requirement, None, _ladder(64), EFFECTIVE, 1, 1.0)
    assert "inputs repeat" in text and "2,109,696" in text and "thresholds estimate" in text
    assert "512-64-10 (32,896 bits" in text
    plain = ANSWERS.q5(NOMINAL, 2000, requirement, None)
    assert "Measured on the real labels" not in plain


def test_q6_states_the_images_each_head_memorized():
    rows = [_mem_row(w, n) for w, n in ((1, 3), (8, 1100))] + [_mem_row(32, 2000, all_images=True),
                                                              _mem_row(8, 1050, copies=49)]
    text = ANSWERS.q6(_record(), {"accuracy": 0.9}, NOMINAL, 2000, "random-seed0", rows, EFFECTIVE)
    assert "512-1-10: 3 images" in text and "512-8-10: 1,100 images" in text
    assert "memorized 1,050 images against 1,100" in text
    assert "512-32-10 (16,448 bits of effective MEC) already fitted all 2,000" in text
    assert "2,109,696 effective bits" in text
    none_all = ANSWERS.q6(_record(), {"accuracy": 0.9}, NOMINAL, 2000, "imagenet", rows[:2], EFFECTIVE)
    assert "No small head fitted every random label" in none_all
    old = ANSWERS.q6(_record(), {"accuracy": 0.9}, NOMINAL, 2000, "imagenet")
    assert "more epochs would memorize" in old


def test_q8_gives_rho_both_ways():
    text = ANSWERS.q8({"total": 2000, "accuracy": 0.9, "correct": 1800}, NOMINAL, [0.9, 0.91], EFFECTIVE)
    assert "the inputs repeat" in text and "Across 2 independently" in text
    assert text.count("rho") == 1


# ---------------------------------------------------------------- Q1, Q2, Q4, Q9: content per branch, by hand

def test_q1_meets_or_misses_the_cheque_bar_and_names_the_weakest_class():
    confusion = torch.tensor([[9, 1, 0], [0, 10, 0], [3, 0, 7]])  # class 2: 7 of 10 right, the least
    low = ANSWERS.q1({"accuracy": 0.8667, "total": 30}, confusion)
    assert "does not meet that bar" in low and "86.67% on 30 test images" in low and "chance is 33%" in low
    assert "the least margin here is 2 (70.0% of its test images correct)" in low
    high = ANSWERS.q1({"accuracy": 0.995, "total": 30}, confusion)
    assert "this head meets that bar" in high


def test_q2_counts_the_subsets_and_the_imbalance():
    text = ANSWERS.q2({"training": [100, 100], "validation": [20, 20]}, [5000, 6742], 10_000)
    assert "11,742 training and 10,000 test images" in text and "200 training, 40 validation" in text
    assert "5,000 to 6,742 (largest / smallest = 1.35)" in text  # 6,742 / 5,000 by hand


def test_q4_the_information_reduced():
    text = ANSWERS.q4(28 * 28 * 8, 10)
    # 6,272 bits in, log2(10) = 3.32 bits out: a factor of 6,272 / 3.3219 = 1,888
    assert "up to 6,272 bits" in text and "log2(10) = 3.32 bits" in text and "about 1,888" in text
    assert "log2(8) = 3.00 bits" in ANSWERS.q4(28 * 28 * 8, 8) and "about 2,091" in ANSWERS.q4(6272, 8)


def test_q9_counts_the_pruned_variants_not_the_controls():
    text = ANSWERS.q9(["l1", "l2", "none", "scratch"])
    assert "The 2 pruned variants (l1, l2)" in text and "one modality" in text
