"""Metrics over a whole split: loss, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mlp.data import Split


@contextmanager
def eval_mode(model: torch.nn.Module):
    """The model in eval mode (dropout off, batch norm on its running statistics) for the block,
    then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, num_classes: int, batch_size: int = 1024) -> dict[str, Any]:
    """Everything is summed on the device and read back once at the end."""
    device = split.labels.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.long)
    with eval_mode(model):
        for start in range(0, len(split), batch_size):
            x = split.images[start : start + batch_size]
            y = split.labels[start : start + batch_size]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes).cpu()  # rows: true class, columns: predicted
    total = int(confusion.sum())
    correct = int(confusion.diag().sum())
    per_class = confusion.diag() / confusion.sum(1).clamp_min(1)
    return {
        "loss": loss_sum.item() / max(total, 1),
        "accuracy": correct / max(total, 1),
        "correct": correct,
        "total": total,
        "per_class_accuracy": per_class.tolist(),
        "confusion": confusion.tolist(),
    }


@torch.inference_mode()
def misclassified(model: torch.nn.Module, split: Split, limit: int, batch_size: int = 1024
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into ``split`` and predicted labels of its first ``limit`` wrongly classified images."""
    indices, predicted = [], []
    found = 0
    with eval_mode(model):
        for start in range(0, len(split), batch_size):
            pred = model(split.images[start : start + batch_size]).argmax(1)
            wrong = (pred != split.labels[start : start + batch_size]).nonzero().squeeze(1)
            indices.append(wrong + start)
            predicted.append(pred[wrong])
            found += len(wrong)
            if found >= limit:
                break
    return torch.cat(indices)[:limit], torch.cat(predicted)[:limit]


def format_report(result: dict[str, Any], classes: list[str], title: str) -> str:
    """A readable table: headline numbers, per-class accuracy, the confusion matrix."""
    lines = [
        title,
        f"accuracy  {result['accuracy'] * 100:.2f}%  ({result['correct']}/{result['total']})",
        f"loss      {result['loss']:.4f}",
        "",
        "per-class accuracy",
    ]
    name_w = max(len(c) for c in classes)
    for name, acc, row in zip(classes, result["per_class_accuracy"], result["confusion"]):
        lines.append(f"  {name:<{name_w}}  {acc * 100:6.2f}%  (n={sum(row)})")
    if len(classes) <= 20:
        # A row is labelled by its class index and name, once: MNIST's names ("0 - zero") hold the index.
        labels = [name if name.split(" - ")[0] == str(i) else f"{i:>2} {name}" for i, name in enumerate(classes)]
        label_w = max(map(len, labels))
        cell = max(4, len(str(max(max(r) for r in result["confusion"])))) + 1
        lines += ["", "confusion matrix (rows: true class, columns: predicted class index)",
                  " " * (label_w + 2) + "".join(f"{i:>{cell}}" for i in range(len(classes)))]
        for label, row in zip(labels, result["confusion"]):
            lines.append(f"  {label:<{label_w}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def evaluate_checkpoint(path: Path, split: str = "test", data_root: str | None = None,
                        device: str | None = None, batch_size: int | None = None,
                        config: Path | None = None) -> dict[str, Any]:
    """``mlp eval``: rebuild the model from the file alone and measure it on one split.

    With ``config``, the file is a bare state dict from another script (see mlp.commands.state_dict).
    """
    from mlp.run.checkpoint import load_model
    from mlp.data import load_eval_split, resolve_root
    from mlp.device import pick_device

    ckpt, cfg, model = load_model(path, config, data_root)
    dev = pick_device(device or "auto", "--device")  # where it trained does not matter here
    folder = cfg.data.dataset == "folder"  # data.root is the folder itself, which MLP_DATA_ROOT does not replace
    root = Path(data_root).expanduser() if data_root else Path(cfg.data.root).expanduser() if folder else \
        resolve_root(cfg.data.root)
    if split == "val" and cfg.data.val_size == 0:
        from mlp.errors import UserError

        raise UserError(f"{path} was trained with data.val_size 0: there is no validation split; use --split test")
    norm, read = ckpt["normalization"], None
    if folder:
        from mlp.image_folder import read_eval_split

        def read(name):
            return read_eval_split(cfg.data, root, ckpt["classes"], tuple(ckpt["input_shape"]), name)
    data = load_eval_split(cfg.data.dataset, root, split, cfg.seed, cfg.data.val_size,
                           norm["mean"], norm["std"], dev, read)
    model.to(dev)
    result = evaluate(model, data, len(ckpt["classes"]), batch_size or cfg.train.eval_batch_size)
    shown = {"checkpoint": str(path), "dataset": str(root) if folder else cfg.data.dataset, "split": split, "classes": ckpt["classes"]}
    if ckpt.get("kind") == "imported":  # a bare state dict: say which normalisation was assumed
        shown["normalization"] = norm
    return {**shown, **result}
