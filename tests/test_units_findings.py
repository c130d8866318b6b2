"""Unit tests of the compare report's findings: each sentence is fed numbers that make it come out
one way, then the other, and must say what the numbers say."""

from mlp.comparison.findings import compared, findings, fraction


def _stat(value, low=None, high=None):
    return {"mean": value, "min": value if low is None else low, "max": value if high is None else high}


def _run(accuracy=0.9, signal=(0.5, 0.8, 1.0), ratio=None, status="finished", activation="relu", init_loss=None,
         dead=None, saturated=None, accuracy_range=None):
    return {"status": status, "activation": activation,
            "test_accuracy": _stat(accuracy, *(accuracy_range or ())) if accuracy is not None else None,
            "signal": {"first": list(signal)}, "steps": {"first": 1},
            "signal_ratio": {"first": signal[0] / signal[-1] if ratio is None else ratio},
            **({"init_loss": _stat(init_loss)} if init_loss is not None else {}),
            "dead_max": dead or [0.0, 0.0, 0.0], "saturated_max": saturated or [0.0, 0.0, 0.0]}


def _said(runs, depth=3, seeds=1, classes=None):
    return " ".join(findings({"runs": runs, "depth": depth, "seeds": seeds, "classes": classes}))


def test_the_accuracy_sentence_names_the_best_and_the_worst():
    said = _said({"relu": _run(accuracy=0.91), "tanh": _run(accuracy=0.975), "gelu": _run(accuracy=0.93)})
    assert "tanh reaches the highest test accuracy, 97.50%; relu the lowest, 91.00% (6.5 points less)." in said
    swapped = _said({"relu": _run(accuracy=0.975), "tanh": _run(accuracy=0.91)})
    assert "relu reaches the highest test accuracy, 97.50%; tanh the lowest, 91.00% (6.5 points less)." in swapped
    assert "One seed per condition" in said
    diverged = _said({"relu": _run(), "tanh": _run(status="diverged")})
    assert "highest test accuracy" not in diverged
    assert "tanh diverged: its loss became infinite" in diverged and "relu diverged" not in diverged


def test_with_several_seeds_only_ranges_that_do_not_overlap_are_ranked():
    apart = _said({"relu": _run(accuracy=0.95, accuracy_range=(0.94, 0.96)),
                   "tanh": _run(accuracy=0.90, accuracy_range=(0.89, 0.93))}, seeds=3)
    assert ("relu reaches the highest mean test accuracy over 3 seeds, 95.00% (from 94.00% to 96.00%); "
            "above the whole range of tanh.") in apart
    assert "One seed per condition" not in apart
    overlap = _said({"relu": _run(accuracy=0.95, accuracy_range=(0.94, 0.96)),
                     "tanh": _run(accuracy=0.93, accuracy_range=(0.89, 0.94))}, seeds=3)
    assert "tanh is within the spread of 3 seeds (the ranges overlap), so it is not ranked against it." in overlap
    assert "above the whole range" not in overlap


def test_the_first_loss_is_called_far_from_a_uniform_guess_beyond_a_quarter_of_it():
    said = _said({"relu": _run(init_loss=2.31), "tanh": _run(init_loss=3.0)}, classes=10)
    assert ("Before the first update (step 0) the validation loss is 2.31 (relu) and 3.00 (tanh); a uniform guess "
            "over 10 classes has ln 10 = 2.30 (tanh starts far from it") in said
    near = _said({"relu": _run(init_loss=2.31), "tanh": _run(init_loss=2.8)}, classes=10)
    assert "ln 10 = 2.30." in near and "far from it" not in near


def test_a_vanishing_signal_is_called_so_only_below_a_tenth():
    said = _said({"sigmoid": _run(ratio=0.05), "relu": _run(ratio=0.8)})
    assert ("The gradient signal vanishes on its way back to the input at step 1 for sigmoid (1/20): the signal "
            "reaching layer 1 (next to the input) is that fraction of the signal at layer 3") in said
    assert "For relu (layer 1 is 1/1.2 of layer 3) the signal stays within a factor of 3 across the layers" in said
    near = _said({"sigmoid": _run(ratio=0.12), "relu": _run(ratio=0.8)})
    assert "vanishes" not in near and "In between at step 1: sigmoid (layer 1 is 1/8.3 of layer 3)." in near
    one_layer = _said({"sigmoid": _run(signal=(0.12,), ratio=0.12)}, depth=1)  # one hidden layer: no profile
    assert "vanishes" not in one_layer and "In between" not in one_layer


def test_a_steady_shrink_is_compared_with_the_largest_derivative():
    said = _said({"sigmoid": _run(signal=(0.0625, 0.25, 1.0), activation="sigmoid")})
    assert ("For sigmoid the signal shrinks by a steady factor toward the input at step 1: each layer passes back "
            "about 1/4 of the signal reaching it (from 1/4 to 1/4). That is about the same as sigmoid's largest "
            "derivative, 1/4") in said
    uneven = _said({"sigmoid": _run(signal=(0.01, 0.25, 1.0), activation="sigmoid")})
    assert "steady factor" not in uneven


def test_inactive_units_are_reported_from_five_percent():
    said = _said({"relu": _run(dead=[0.0, 0.3, 0.1]), "tanh": _run(saturated=[0.05, 0.0, 0.0]),
                  "gelu": _run(saturated=[0.01, 0.0, 0.049])})
    assert "at their largest: relu: 30% of layer 2's units dead." in said
    assert "at their largest: tanh: 5% of layer 1's units saturated." in said and "gelu:" not in said
    calm = _said({"relu": _run(dead=[0.0, 0.04, 0.0]), "tanh": _run(saturated=[0.02, 0.0, 0.0])})
    assert "No condition had more than 4.0% of any layer's units dead or saturated at a measured step." in calm


def test_ratios_read_as_fractions_of_the_larger():
    assert [fraction(r) for r in (None, 0.0, 0.000627, 0.0083, 0.05, 0.25, 0.62, 2.43)] == \
        ["–", "0", "1/1600", "1/120", "1/20", "1/4", "1/1.6", "1/2.4"]
    assert compared(0.25, "a", "b") == "a is 1/4 of b" and compared(4.0, "a", "b") == "b is 1/4 of a"
