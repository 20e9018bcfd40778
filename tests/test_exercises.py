"""The exercises' checks: labkit's references pass every one, and plausible wrong answers fail with a message
that names the mistake (a check that passes a wrong answer would be a defect)."""
import math
import random

import pytest
import torch
from torch import nn

import notebook_cells

from labkit import capacity, compress, exercises, finegrained, memorization, metrics, prune, stats, train


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_every_reference_passes_its_check(name):
    assert exercises.verdict(name, exercises.reference(name)) is None


def _fails(name, fn, *words):
    said = exercises.verdict(name, fn)
    assert said is not None, f"the check of {name} passed a wrong answer"
    for w in words:
        assert w in said, said
    return said


def test_rule_checks_refuse_the_parameter_count_the_bytes_and_the_other_reading():
    _fails("perceptron_bits", lambda d: d, "bias")
    _fails("perceptron_bits", lambda d: 8 * (d + 1), "bytes")
    _fails("mec", capacity.parameter_count, "rule 4")
    _fails("mec", lambda w: capacity.mec(w, rule="bottleneck"), "bottleneck")
    _fails("mec_bottleneck", capacity.mec, "narrowest")
    _fails("effective_mec", lambda widths, d: capacity.mec(widths), "distinct")
    _fails("fold", lambda w: w.view(len(w), 49, 512).sum(1), "consecutive")
    _fails("fold", lambda w: w[:, :512], "away")


def test_kappa_check_names_the_2019_formula_and_p_o():
    def kappa_2019(c):
        c = c.double()
        n = c.sum()
        p_o, p_e = c.diag().sum() / n, (c.sum(0) * c.sum(1)).sum() / n ** 2
        return float((1 - p_o) / (1 - p_e))

    _fails("cohen_kappa", kappa_2019, "2019", "(p_o - p_e) / (1 - p_e)")
    _fails("cohen_kappa", lambda c: float(c.diag().sum() / c.sum()), "p_o")
    _fails("confusion_matrix", lambda y, p, k: metrics.confusion_matrix(p, y, k), "transposed")
    _fails("confusion_matrix", lambda y, p, k: metrics.confusion_matrix(y, p, int(max(y.max(), p.max())) + 1),
           "shape")


def _epoch(zero_grad=True, shuffle=True, use_generator=True, train_mode=True, batch_means=False):
    def run(head, features, labels, optimizer, batch_size, generator):
        if train_mode:
            head.train()
        n = len(labels)
        order = (torch.randperm(n, generator=generator) if use_generator else torch.randperm(n)) if shuffle \
            else torch.arange(n)
        total, means = 0.0, []
        for i in range(0, n, batch_size):
            b = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(head(features[b]), labels[b])
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(b)
            means.append(loss.item())
        return sum(means) / len(means) if batch_means else total / n
    return run


def test_training_check_refuses_each_usual_slip():
    assert exercises.verdict("train_one_epoch", _epoch()) is None
    _fails("train_one_epoch", _epoch(zero_grad=False), "zero_grad")
    _fails("train_one_epoch", _epoch(shuffle=False), "shuffle")
    _fails("train_one_epoch", _epoch(use_generator=False), "generator")
    _fails("train_one_epoch", _epoch(train_mode=False), "train()")
    _fails("train_one_epoch", _epoch(batch_means=True), "batch means")


def test_early_stop_check_refuses_zero_based_and_off_by_one_and_the_last_epoch():
    _fails("early_stop", lambda acc, p: (train.early_stop(acc, p)[0], train.early_stop(acc, p)[1] - 1), "from 1")
    _fails("early_stop", lambda acc, p: (min(train.early_stop(acc, p)[0] + 1, len(acc) + 1),
                                         train.early_stop(acc, p)[1]), "stops")
    _fails("early_stop", lambda acc, p: (train.early_stop(acc, p)[0],) * 2, "best")


def test_score_checks_refuse_the_2019_plain_sum_and_the_other_criteria():
    _fails("l1_scores", lambda w: w.sum(1), "2019")
    _fails("l2_scores", lambda w: w.sum(1), "2019")
    _fails("l1_scores", lambda w: w.abs().sum(1), "magnitude")
    _fails("l1_scores", lambda w: (w - w.mean(1, keepdim=True)).abs().sum(1), "dim 0")
    _fails("l2_scores", lambda w: (w - w.mean(0)).square().sum(1).sqrt(), "root")
    _fails("l2_scores", prune.l1_scores, "square")
    _fails("l1_scores", prune.l2_scores, "l2")
    _fails("l2_scores", lambda w: (w - w.mean(0)).square().sum(1, keepdim=True), "shape")


def test_block_scores_are_the_plain_references_scores():
    torch.manual_seed(1)
    w = torch.randn(700, 1000)  # more rows than one block of neuron_scores
    assert torch.allclose(prune.neuron_scores(w, "l1"), prune.l1_scores(w), rtol=1e-12)
    assert torch.allclose(prune.neuron_scores(w, "l2"), prune.l2_scores(w), rtol=1e-12)


def test_reservoir_check_refuses_the_first_k_an_off_by_one_and_a_global_rng():
    def first_k(n, k, rng):
        return list(range(k))

    def off_by_one(n, k, rng):
        if k == 0:
            return []
        r = list(range(k))
        for i in range(k, n):
            j = rng.randint(0, i - 1)
            if j < k:
                r[j] = i
        return r

    def global_rng(n, k, rng):
        return random.sample(range(n), k)

    _fails("reservoir_sample", first_k, "first k")
    _fails("reservoir_sample", off_by_one, "k / (i + 1)")
    _fails("reservoir_sample", global_rng, "rng")


def test_removal_check_refuses_kept_columns_cut_columns_a_kept_bias_and_the_complement():
    def rows_only(fc, nxt, keep):
        new = nn.Linear(fc.in_features, len(keep))
        new.weight.data, new.bias.data = fc.weight.data[keep].clone(), fc.bias.data[keep].clone()
        return new, nxt

    def columns_of_fc(fc, nxt, keep):
        new = nn.Linear(len(keep), fc.out_features)
        return new, nxt

    def bias_kept(fc, nxt, keep):
        new, new_next = prune.remove_neurons(fc, nxt, keep)
        new.bias = nn.Parameter(fc.bias.detach().clone())
        return new, new_next

    def complement(fc, nxt, keep):
        gone = prune.kept_indices(fc.out_features, keep.tolist())
        return prune.remove_neurons(fc, nxt, gone)

    _fails("remove_neurons", rows_only, "columns", "6 inputs")
    _fails("remove_neurons", columns_of_fc, "rows")
    _fails("remove_neurons", bias_kept, "bias")
    _fails("remove_neurons", complement, "one row per kept neuron")


def test_in_place_cut_gives_the_reference_removal():
    from labkit import model

    head = model.build_head((40, 30), map_size=1, seed=0)
    fc, nxt = head.linears()[0], head.linears()[1]
    want = prune.remove_neurons(fc, nxt, prune.kept_indices(40, [3, 7, 8]))
    prune.prune_neurons(head, 0, 3, "l2")  # which 3 it removes depends on the scores: redo with those
    del want
    head = model.build_head((40, 30), map_size=1, seed=0)
    fc, nxt = head.linears()[0], head.linears()[1]
    removed = prune.choose_neurons(fc.weight, 3, "l2")
    want_fc, want_next = prune.remove_neurons(fc, nxt, prune.kept_indices(40, removed))
    prune.prune_neurons(head, 0, 3, "l2")
    assert torch.equal(head.linears()[0].weight, want_fc.weight) and torch.equal(head.linears()[0].bias, want_fc.bias)
    assert torch.equal(head.linears()[1].weight, want_next.weight) and torch.equal(head.linears()[1].bias, want_next.bias)


def test_kmeans_check_refuses_an_untrained_linear_codebook_and_a_wrong_count():
    def linear_only(w, bits):
        book = torch.linspace(float(w.min()), float(w.max()), 1 << bits)
        return book, (w.flatten()[:, None] - book).abs().argmin(1)

    def one_too_many(w, bits):
        book, index = compress.kmeans_share(w, bits, clusters=(1 << bits) + 1)
        return book, index

    _fails("kmeans_share", linear_only, "linearly")
    _fails("kmeans_share", one_too_many, "2 values")


def test_sampled_codebook_by_kmeans_share_is_labkits_codebook():
    torch.manual_seed(0)
    w = torch.randn(3000, 500)
    mine = compress.kmeans_codebook(w, 4, sample=100_000, share=compress.kmeans_share)
    ours = compress.kmeans_codebook(w, 4, sample=100_000)
    assert torch.equal(mine[0], ours[0]) and torch.equal(mine[1], ours[1])


def test_mask_check_refuses_signed_smallest_and_per_row_masks():
    def signed(w, f):
        k = round(f * w.numel())
        m = torch.zeros(w.numel(), dtype=torch.bool)
        m[w.flatten().topk(k).indices] = True
        return m.view(w.shape)

    def smallest(w, f):
        k = round(f * w.numel())
        m = torch.zeros(w.numel(), dtype=torch.bool)
        m[w.abs().flatten().topk(k, largest=False).indices] = True
        return m.view(w.shape)

    def per_row(w, f):
        m = torch.zeros_like(w, dtype=torch.bool)
        m.scatter_(1, w.abs().topk(max(1, round(f * w.shape[1])), dim=1).indices, True)
        return m

    _fails("fine_grained_mask", signed, "signed")
    _fails("fine_grained_mask", smallest, "smallest")
    _fails("fine_grained_mask", per_row, "row")
    _fails("fine_grained_mask", lambda w, f: finegrained.fine_grained_mask(w, f).float(), "bool")


def test_capacity_checks_refuse_the_usual_slips():
    _fails("bits_stored", lambda n, a, k=10: n * (math.log2(k) - memorization.binary_entropy(a)) if a > 1 / k else 0.0,
           "(1 - a) log2 9")
    _fails("bits_stored", lambda n, a, k=10: n * a * math.log2(k), "right labels")
    _fails("bits_stored", lambda n, a, k=10: n * (math.log2(k) - memorization.binary_entropy(a)
                                                  - (1 - a) * math.log2(k - 1)), "chance")
    _fails("count_thresholds", lambda s, y: int((y[1:] != y[:-1]).sum()), "sort")
    _fails("requirement_bits", lambda t, d: (t * (d + 1) + t + 1, round(math.log2(t + 1)) * d), "rounds up")
    _fails("requirement_bits", lambda t, d: (t * (d + 1) + t, math.ceil(math.log2(t + 1)) * d), "bias")
    _fails("requirement_bits", lambda t, d: (t * (d + 1), math.ceil(math.log2(t + 1)) * d), "output neuron")
    _fails("requirement_bits", lambda t, d: (t * (d + 1) + t + 1, math.ceil(math.log2(t + 1))), "requirement_bits")


def _doubling_only(fits, limit, start=100):
    n, lo = min(start, limit), 0
    while fits(n):
        lo = n
        if n == limit:
            break
        n = min(2 * n, limit)
    return lo


def _linear_scan(fits, limit):
    n = 0
    while n < limit and fits(n + 1):
        n += 1
    return n


def test_search_check_refuses_doubling_alone_a_linear_scan_and_overshooting():
    _fails("images_memorized", _doubling_only, "bisect")
    _fails("images_memorized", _linear_scan, "doubling from start=100")
    _fails("images_memorized", lambda fits, limit: memorization.images_memorized(fits, limit) + 1, "at most")


def test_search_check_refuses_a_bisection_without_doubling_and_stops_one_that_never_ends():
    def exact(fits, limit):
        lo, hi = 0, limit + 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    def no_return_at_the_limit(fits, limit, start=100, precision=0.125):
        lo, hi, n = 0, None, min(start, limit)
        while hi is None:  # forgets to stop once it fitted the limit: asks fits(limit) forever
            if fits(n):
                lo, n = n, min(2 * n, limit)
            else:
                hi = n
        while hi - lo > max(1, int(precision * lo)):
            n = (lo + hi) // 2
            lo, hi = (n, hi) if fits(n) else (lo, n)
        return lo

    _fails("images_memorized", exact, "doubling")
    _fails("images_memorized", no_return_at_the_limit, "more than 40 calls")


def test_check_helpers_refuse_a_vector_where_a_number_belongs_and_take_float32_kappa():
    _fails("cohen_kappa", lambda c: torch.tensor([metrics.cohens_kappa(c)]), "one number")
    assert exercises.verdict("cohen_kappa", lambda c: torch.tensor(metrics.cohens_kappa(c), dtype=torch.float32)) is None
    _fails("l2_scores", lambda w: prune.l2_scores(w).float(), "float64")
    _fails("early_stop", lambda acc, p: train.early_stop([a + 1e-9 * i for i, a in enumerate(acc)], p), "equal")


def test_a_students_search_runs_the_memorization_in_lockstep_and_gives_the_references_numbers():
    torch.manual_seed(0)
    x = torch.randn(300, 16)
    specs = [memorization.HeadSpec(h) for h in (1, 4, 16)]
    calls = []

    def mine(fits, limit):
        calls.append(limit)
        return memorization.images_memorized(fits, limit, 20, 0.125)

    ours = notebook_cells.memorize(x, specs, start=20, steps=60)
    theirs = notebook_cells.memorize(x, specs, start=20, steps=60, search=mine, bits=memorization.bits_stored)
    assert ours == theirs and calls == [300] * 3


def test_a_search_that_raises_is_raised_by_the_memorization():
    def broken(fits, limit):
        fits(1)
        raise ZeroDivisionError("mine")

    with pytest.raises(ZeroDivisionError, match="mine"):
        notebook_cells.memorize(torch.randn(50, 4), [memorization.HeadSpec(2)], start=10, steps=5, search=broken)


def test_a_search_must_return_a_count_it_asked_about():
    def guessed(fits, limit):
        fits(4)
        return 7  # never asked fits(7)

    with pytest.raises(ValueError, match="7 images, which it never asked fits about"):
        notebook_cells.memorize(torch.randn(50, 4), [memorization.HeadSpec(2)], steps=5, search=guessed)
    with pytest.raises(ValueError, match="images_memorized=51"):
        notebook_cells.memorize(torch.randn(50, 4), [memorization.HeadSpec(2)], steps=5,
                                search=lambda fits, limit: limit + 1)


def test_check_prints_on_stderr_when_wrong_and_chosen_falls_back(capsys):
    exercises.check("l1_scores", {"l1_scores": lambda w: w.sum(1)})
    out = capsys.readouterr()
    assert "2019" in out.err and not out.out
    picked = exercises.chosen("l1_scores")
    assert picked["l1_scores"] is prune.l1_scores and "labkit's" in capsys.readouterr().out
    mine = lambda w: prune.l1_scores(w)  # noqa: E731
    exercises.check("l1_scores", {"l1_scores": mine})
    assert "check passed" in capsys.readouterr().out
    assert exercises.chosen("l1_scores")["l1_scores"] is mine and exercises.whose({"l1_scores": mine}) == "your l1_scores"
    exercises.check("l1_scores", {})
    assert "not defined" in capsys.readouterr().err and exercises.chosen("l1_scores")["l1_scores"] is prune.l1_scores


def test_an_unwritten_stub_is_reported_as_not_written():
    def stub(weight):
        raise NotImplementedError()

    assert "not written yet" in exercises.verdict("l2_scores", stub)


def _solutions(name):
    """The functions the instructor's copy of notebook `name` defines in its solution cells."""
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    namespace = {"torch": torch, "math": math, "stats": stats}  # what the notebooks import before their exercises
    for c in cells:
        if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code":
            exec("".join(c["source"]), namespace)  # noqa: S102 (the repository's own notebooks)
    return namespace


@pytest.mark.parametrize("name", ["01_mec_by_hand", "02_train_vgg16", "03_prune_compare", "04_capacity_curve"])
def test_the_instructors_solutions_pass_their_checks(name):
    namespace = _solutions(name)
    graded = [n for n in exercises.EXERCISES if n in namespace]
    assert len(graded) >= 4
    for n in graded:
        assert exercises.verdict(n, namespace[n]) is None, n


def test_the_instructors_solutions_give_the_references_numbers():
    from labkit import model

    mine = _solutions("03_prune_compare")
    for method in ("l1", "l2", "reservoir"):
        heads = []
        for functions in ({}, {k: mine[k] for k in ("l1_scores", "l2_scores", "reservoir_sample", "remove_neurons")}):
            head = model.build_head((60, 40, 20), map_size=1, seed=3)
            with prune.using(**functions):
                for layer in (0, 1, 2):
                    prune.prune_neurons(head, layer, 7, method, seed=11)
            heads.append(head)
        for a, b in zip(heads[0].state_dict().values(), heads[1].state_dict().values()):
            assert torch.equal(a, b), method
    head = model.build_head((60,), map_size=1, seed=3)
    ours, theirs = compress.compress_head(head, 4), compress.compress_head(head, 4, share=mine["kmeans_share"])
    assert all(torch.equal(a["codebook"], b["codebook"]) and torch.equal(a["packed"], b["packed"])
               for a, b in zip(ours["layers"], theirs["layers"]))
    four = _solutions("04_capacity_curve")
    x = torch.randn(200, 8)
    specs = [memorization.HeadSpec(h) for h in (1, 8)]
    assert notebook_cells.memorize(x, specs, start=20, steps=40) == notebook_cells.memorize(
        x, specs, start=20, steps=40, search=lambda fits, limit: four["images_memorized"](fits, limit, 20),
        bits=four["bits_stored"])
    X, y = torch.randint(0, 5, (300, 6)).float(), torch.randint(0, 3, (300,))  # integer sums: ties, in data order
    assert capacity.data_requirement(X, y) == capacity.data_requirement(X, y, four["count_thresholds"],
                                                                        four["requirement_bits"])
