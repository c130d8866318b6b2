"""``mlp export``: a trained model as one file that runs without mlp (TorchScript or ONNX).

The exported module takes images as float tensors (N, C, H, W) in [0, 1] (the checkpoint's
channels, height and width) and subtracts the training mean and divides by the training std
itself, so a user needs only torch (``torch.jit.load``) or onnxruntime.  It returns the logits,
one per class (softmax gives the probabilities ``mlp predict`` prints).  The class names and
the input description travel inside the file: TorchScript's extra file ``mlp.json``, ONNX's
``metadata_props`` (``classes``, ``input``, ``normalization``).

The file is built in memory and written atomically (temporary file, fsync, rename), so a
read-only folder or a full disk is one line and leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from mlp.errors import UserError, first_line
from mlp.files import writing

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
INPUT = "float32 images (N, {0}, {1}, {2}) in [0, 1]; the model normalises them itself"


class Normalised(torch.nn.Module):
    """``model`` with the training normalisation in front: images in [0, 1] in, logits out."""

    def __init__(self, model: torch.nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def normalised_model(checkpoint: str | Path) -> tuple[Normalised, dict[str, Any]]:
    """The checkpoint's model (eval mode, on the CPU) taking images in [0, 1], and its metadata."""
    from mlp.run.checkpoint import load_model

    ckpt, _, model = load_model(Path(checkpoint))
    norm = ckpt["normalization"]
    module = Normalised(model.eval(), norm["mean"], norm["std"]).eval()
    meta = {"classes": list(ckpt["classes"]), "input_shape": list(ckpt["input_shape"]),
            "input": INPUT.format(*ckpt["input_shape"]),
            "normalization": {"mean": list(norm["mean"]), "std": list(norm["std"])}}
    return module, meta


def export(checkpoint: Path, fmt: str = "torchscript", out: Path | None = None) -> Path:
    """Write the checkpoint's model as ``fmt`` to ``out`` (default: beside it); the path written."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose torchscript or onnx")
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(FORMATS[fmt])
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name, e.g. {out / ('model' + FORMATS[fmt])}")
    module, meta = normalised_model(checkpoint)
    example = torch.rand(2, *meta["input_shape"])
    data = _torchscript(module, example, meta) if fmt == "torchscript" else _onnx(module, example, meta)
    from mlp.run.durable import atomic_write_bytes

    try:
        atomic_write_bytes(out, data)
    except OSError as e:  # the temporary file's name would say less than the file asked for
        with writing(out):
            raise OSError(e.errno, e.strerror, str(out)) from None
    return out

def _torchscript(module: Normalised, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit says it is deprecated in favour of torch.export
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, buffer, _extra_files={"mlp.json": json.dumps(meta)})
    return buffer.getvalue()


def _onnx(module: Normalised, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise UserError("--format onnx needs the onnx packages: pip install -e '.[export]' "
                        "(onnx, onnxscript, onnxruntime)") from None
    batch = torch.export.Dim("batch")
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), None, input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    except Exception as e:  # the exporter's own failure: an operator ONNX lacks
        raise UserError(f"the ONNX exporter cannot convert this model ({first_line(e)}); "
                        "use --format torchscript") from None
    proto = program.model_proto
    for key in ("classes", "input", "normalization", "input_shape"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, meta[key] if isinstance(meta[key], str) else json.dumps(meta[key])
    return proto.SerializeToString()

