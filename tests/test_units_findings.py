"""Unit tests of the compare report's findings: each sentence is fed numbers that make it come out
one way, then the other, and must say what the numbers say."""

import pytest

from mlp.comparison.report import findings, ratio_text


def _run(accuracy=0.9, first_loss=0.5, seconds=10.0, ratio=1.0, last_ratio=None, updates=None, inactive=None,
         epochs=2, status="finished"):
    return {"status": status, "test_accuracy": accuracy, "train_time_s": seconds,
            "epochs": [{"epoch": e + 1, "train_loss": first_loss / (e + 1)} for e in range(epochs)],
            "signal_ratio": {"first": ratio, "last": last_ratio},
            "steps": {"signal": {"first": 1, "last": 40}, "inactive": {}},
            "update_ratio": {"first": updates} if updates else {},
            "inactive_max": inactive or [0.0, 0.0, 0.0]}


def _said(runs, optimizer="sgd", depth=3):
    return " ".join(findings({"runs": runs, "depth": depth, "optimizer": optimizer}))


def test_the_speed_sentence_names_the_fastest_first():
    said = _said({"relu": _run(seconds=12.5), "tanh": _run(seconds=30.25)})
    assert "Training took 12.5 s (relu) to 30.2 s (tanh) per run" in said
    swapped = _said({"relu": _run(seconds=30.25), "tanh": _run(seconds=12.5)})
    assert "Training took 12.5 s (tanh) to 30.2 s (relu) per run" in swapped


def test_the_first_epoch_sentence_names_the_lowest_training_loss():
    said = _said({"relu": _run(first_loss=0.31), "tanh": _run(first_loss=0.87), "gelu": _run(first_loss=0.5)})
    assert "After the first epoch relu has the lowest training loss (0.310) and tanh the highest (0.870)." in said
    swapped = _said({"relu": _run(first_loss=0.87), "tanh": _run(first_loss=0.31)})
    assert "After the first epoch tanh has the lowest training loss (0.310) and relu the highest (0.870)." in swapped
    assert "After the first epoch" not in _said({"relu": _run(epochs=1), "tanh": _run(epochs=1, first_loss=0.9)})


def test_the_accuracy_sentence_names_the_best_and_the_worst():
    said = _said({"relu": _run(accuracy=0.91), "tanh": _run(accuracy=0.975), "gelu": _run(accuracy=0.93)})
    assert "tanh reaches the highest test accuracy, 97.50%; relu the lowest, 91.00% (6.5 points less)." in said
    assert "highest test accuracy" not in _said({"relu": _run(), "tanh": _run(status="diverged")})
    assert "tanh diverged: its loss became infinite" in _said({"relu": _run(), "tanh": _run(status="diverged")})


def test_a_vanishing_signal_is_called_so_only_below_a_tenth():
    said = _said({"sigmoid": _run(ratio=0.05, last_ratio=0.2), "relu": _run(ratio=0.8)})
    assert ("At step 1 the gradient signal vanishes on its way back to the input for sigmoid: the signal "
            "reaching layer 1 is 1/20 of that at layer 3.") in said
    assert "For relu (1/1.2) the signal reaching layer 1 is within 3 times of its strength at layer 3" in said
    assert "By the end, sigmoid's ratio is 1/5.0 (step 40)." in said
    near = _said({"sigmoid": _run(ratio=0.12), "relu": _run(ratio=0.8)})
    assert "vanishes" not in near and "In between at step 1: sigmoid (1/8.3)." in near
    assert "vanishes" not in _said({"sigmoid": _run(ratio=0.12)}, depth=1)  # one hidden layer: no profile


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_the_adam_sentence_comes_only_when_the_first_layer_moved_anyway(optimizer):
    moved = _said({"sigmoid": _run(ratio=0.01, updates=[0.5, 0.2, 1.0])}, optimizer)
    assert (f"at step 1 its layer-1 weights moved 1/2.0 as much as layer 3's, relative to their size "
            f"({optimizer} scales each weight's step by that weight's own gradient history).") in moved
    still = _said({"sigmoid": _run(ratio=0.01, updates=[0.05, 0.2, 1.0])}, optimizer)
    assert "moved 1/20 as much as layer 3's, relative to their size." in still and "gradient history" not in still
    sgd = _said({"sigmoid": _run(ratio=0.01, updates=[0.5, 0.2, 1.0])}, "sgd")
    assert "moved 1/2.0 as much" in sgd and "gradient history" not in sgd


def test_inactive_units_are_reported_from_five_percent():
    said = _said({"relu": _run(inactive=[0.0, 0.3, 0.1]), "tanh": _run(inactive=[0.05, 0.0, 0.0]),
                  "gelu": _run(inactive=[0.01, 0.0, 0.049])})
    assert ("at their largest: relu: 30% of layer 2's units dead; tanh: 5% of layer 1's units saturated. "
            "The others stay below 5% (gelu).") in said
    calm = _said({"relu": _run(inactive=[0.0, 0.04, 0.0]), "tanh": _run(inactive=[0.02, 0.0, 0.0])})
    assert "No activation had more than 4.0% of any layer's units inactive at a measured step." in calm


def test_ratios_read_as_fractions_or_multiples():
    assert [ratio_text(r) for r in (None, 0.0, 0.000627, 0.0083, 0.05, 0.62, 1.0, 2.43)] == \
        ["–", "0", "1/1600", "1/120", "1/20", "1/1.6", "1.0 times", "2.4 times"]
    assert ratio_text(2.43, short=True) == "2.4×"
