"""What the terminal shows a new user: the epoch lines' star, the eval table."""

import re

from conftest import run_mlp


def test_the_best_epoch_star_is_explained_once_and_eval_labels_rows_once(tiny_config, tmp_path):
    done = run_mlp("train", "--config", tiny_config, "--no-progress", "--run-dir", "run")  # 2 epochs
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(epochs) == 2 and lines[epochs[0]].endswith("  *")
    explained = [i for i, line in enumerate(lines) if "* = best validation accuracy so far" in line]
    assert explained == [epochs[0] + 1] and "checkpoint.pth" in lines[explained[0]]

    shown = run_mlp("eval", tmp_path / "run" / "checkpoint.pth").stdout.splitlines()
    matrix = shown[shown.index("confusion matrix (rows: true class, columns: predicted class index)") + 1:]
    assert matrix[0].split() == [str(i) for i in range(10)]
    assert [re.match(r"\s+(\d - \w+)\s+\d", row).group(1) for row in matrix[1:]] == \
        ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
         "8 - eight", "9 - nine"]
