"""A student's function cannot change the study: a function that edits its input fails its check in the student's
terms, the study hands scoring functions copies and stops when a removal edits the layers it was given, and a
function far too slow for the study's sizes is refused in its check with the estimate and the likely cause."""
import copy

import pytest
import torch
from torch import nn

from labkit import exercises, guard, model, prune


def l1_in_place(weight):
    w = weight.detach()
    w -= w.mean(0)  # the right values, and the caller's weight changed
    return w.double().abs().sum(1)


def l2_in_place(weight):
    w = weight.detach()
    w.sub_(w.mean(0)).square_()
    return w.double().sum(1)


def remove_in_place(fc, next_fc, keep):
    """Right layers, made by cutting the given ones in place through .data."""
    fc.weight.data = fc.weight.data[keep]
    fc.bias.data = fc.bias.data[keep]
    fc.out_features = len(keep)
    next_fc.weight.data = next_fc.weight.data[:, keep]
    next_fc.in_features = len(keep)
    return fc, next_fc


def remove_and_zero(fc, next_fc, keep):
    """prune's reference, then the removed rows of the old layer zeroed (an edit the study must notice)."""
    new = prune.remove_neurons(fc, next_fc, keep)
    with torch.no_grad():
        gone = torch.ones(fc.out_features, dtype=torch.bool)
        gone[keep] = False
        fc.weight[gone] = 0
    return new


@pytest.mark.parametrize("name, fn", [("l1_scores", l1_in_place), ("l2_scores", l2_in_place)])
def test_scores_that_edit_their_input_fail_their_check(name, fn):
    said = exercises.verdict(name, fn)
    assert said is not None and f"your {name} changed the weight it was given; work on a copy" in said


@pytest.mark.parametrize("fn", [remove_in_place, remove_and_zero])
def test_a_removal_that_edits_its_layers_fails_its_check(fn):
    said = exercises.verdict("remove_neurons", fn)
    assert said is not None and "changed the fc it was given" in said and "torch.nn.Linear" in said


def test_the_study_hands_scoring_functions_copies_and_scores_as_on_the_whole_layer():
    torch.manual_seed(0)
    weight = torch.randn(64, 3000) * torch.linspace(0.5, 2, 3000)  # three column blocks and a ragged one
    before = weight.clone()
    for method, fn in (("l1", l1_in_place), ("l2", l2_in_place)):
        with prune.using(**{f"{method}_scores": fn}):
            chosen = prune.choose_neurons(weight, 10, method)
        assert torch.equal(weight, before), "the layer changed under the student's function"
        assert chosen == prune.choose_neurons(weight, 10, method)  # labkit's own scores choose the same
        scores = prune._scores_by(getattr(prune, f"{method}_scores"), method, weight)
        assert torch.allclose(scores, prune.neuron_scores(weight, method), rtol=1e-12)


def test_the_study_stops_when_a_removal_edits_the_layers_it_was_given():
    head = model.build_head((40, 30, 8), seed=0)
    for fn in (remove_in_place, remove_and_zero):
        copy_ = copy.deepcopy(head)
        with prune.using(remove_neurons=fn), pytest.raises(guard.ChangedInput, match="the study stopped"):
            prune.prune_neurons(copy_, 0, 5, "l2")
    with prune.using(remove_neurons=prune.remove_neurons):  # one that leaves them alone goes through
        pruned, removed = prune.prune_neurons(copy.deepcopy(head), 0, 5, "l2")
    assert pruned.widths()[1] == 35 and len(removed) == 5


def test_fingerprints_see_edits_through_detach_and_through_data():
    layer = nn.Linear(300, 20)
    before = guard.fingerprint(layer)
    assert guard.same_fingerprint(before, guard.fingerprint(layer))
    layer.weight.data[3, 7] += 1e-3  # .data does not raise the version counter
    assert not guard.same_fingerprint(before, guard.fingerprint(layer))
    before = guard.fingerprint(layer)
    layer.bias.detach().mul_(1)  # in place, values unchanged: the counter still says it was touched
    assert not guard.same_fingerprint(before, guard.fingerprint(layer))


def test_a_function_too_slow_for_the_study_is_refused_with_the_estimate_and_the_cause():
    def l1_by_elements(weight):
        w = weight.detach().double()
        mean = w.mean(0)
        out = torch.zeros(len(w), dtype=torch.float64)
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                out[i] += abs(w[i, j] - mean[j])
        return out

    said = exercises.verdict("l1_scores", l1_by_elements)
    assert said is not None and "is right, but" in said and "minutes" in said and "Python loop" in said


def test_a_training_step_may_change_its_head_and_optimizer_but_not_its_data():
    from labkit import train

    assert exercises.verdict("train_one_epoch", train.train_one_epoch) is None

    def shuffles_in_place(head, features, labels, optimizer, batch_size, generator):
        order = torch.randperm(len(labels), generator=generator)
        features[:] = features[order]
        labels[:] = labels[order]
        return train.train_one_epoch(head, features, labels, optimizer, batch_size, generator)

    said = exercises.verdict("train_one_epoch", shuffles_in_place)
    assert said is not None and "changed the features it was given" in said
