"""Unit tests of evaluation with a stub model whose every prediction is known: the confusion
matrix (rows: true class), per-class accuracy (of each true class, not precision), loss,
batching, and the misclassified images."""

import math

import pytest
import torch

from mlp.commands.evaluate import evaluate, format_report, misclassified
from mlp.data import Split

# true class → predicted class for ten images of three classes
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]


class Lookup(torch.nn.Module):
    """Answers, for the image whose first pixel is i, logits that make ``PREDICTED[i]`` the class
    with probability 0.7 (the other two 0.15 each)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, so the model has a device
        self.modes = set()  # whether it was in training mode, at each call

    def forward(self, x):
        self.modes.add(self.training)
        index = x.flatten(1)[:, 0].long()
        logits = torch.full((len(x), 3), math.log(0.15))
        logits[torch.arange(len(x)), torch.tensor(PREDICTED)[index]] = math.log(0.7)
        return logits * self.scale


def _split():
    images = torch.zeros(len(LABELS), 1, 2, 2)
    images[:, 0, 0, 0] = torch.arange(len(LABELS), dtype=torch.float32)
    return Split(images, torch.tensor(LABELS))


@pytest.mark.parametrize("batch_size", [1024, 3, 1])
def test_the_confusion_matrix_has_a_row_per_true_class(batch_size):
    result = evaluate(Lookup(), _split(), 3, batch_size)
    assert result["confusion"] == [[2, 1, 1],  # class 0: two right, one taken for 1, one for 2
                                   [1, 2, 0],
                                   [0, 0, 3]]
    assert (result["correct"], result["total"]) == (7, 10) and result["accuracy"] == pytest.approx(0.7)
    # of each true class, the share found: 2/4, 2/3, 3/3 (precision would be 2/3, 2/3, 3/4)
    assert result["per_class_accuracy"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert result["loss"] == pytest.approx(0.7 * -math.log(0.7) + 0.3 * -math.log(0.15))


def test_a_class_absent_from_the_split_has_accuracy_zero_not_nan():
    split = _split()
    result = evaluate(Lookup(), Split(split.images[:7], split.labels[:7]), 3)
    assert result["per_class_accuracy"][2] == 0.0 and result["total"] == 7


def test_evaluation_runs_in_eval_mode_and_leaves_the_model_in_the_mode_it_was_in():
    model = Lookup()
    model.train()
    evaluate(model, _split(), 3)
    assert model.training and model.modes == {False}  # measured in eval mode (dropout off), then put back
    misclassified(model, _split(), limit=3)
    assert model.training and model.modes == {False}
    model.eval()
    evaluate(model, _split(), 3)
    assert not model.training


@pytest.mark.parametrize("batch_size", [1024, 4])
def test_misclassified_gives_the_first_wrong_images_and_what_they_were_taken_for(batch_size):
    wrong, predicted = misclassified(Lookup(), _split(), limit=10, batch_size=batch_size)
    assert wrong.tolist() == [2, 3, 6] and predicted.tolist() == [1, 2, 0]
    first, taken = misclassified(Lookup(), _split(), limit=2, batch_size=batch_size)
    assert first.tolist() == [2, 3] and taken.tolist() == [1, 2]


def test_the_report_labels_rows_as_true_classes_with_their_counts():
    result = evaluate(Lookup(), _split(), 3)
    text = format_report(result, ["cat", "dog", "eel"], "test split")
    assert "accuracy  70.00%  (7/10)" in text
    assert "  cat   50.00%  (n=4)" in text and "  eel  100.00%  (n=3)" in text
    rows = text.split("rows: true class")[1].splitlines()[2:]
    assert [row.split()[-3:] for row in rows] == [["2", "1", "1"], ["1", "2", "0"], ["0", "0", "3"]]
