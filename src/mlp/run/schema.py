"""What a checkpoint (checkpoint.pth, last.pth) must hold, checked field by field before any of it
is used, as the config is (mlp.config): a hostile or damaged file is one line naming the field."""

from __future__ import annotations

from typing import Any, Optional

import torch
from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError,
                      model_validator)

from mlp.errors import UserError

Number = StrictInt | StrictFloat
Tensor = torch.Tensor


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


class Normalization(_Part):
    mean: list[Number] = Field(min_length=1)
    std: list[Number] = Field(min_length=1)


class InputProfile(_Part):
    mean: Tensor
    std: Tensor
    threshold: Number


class Checkpoint(_Part):
    format_version: StrictInt
    config: dict[str, Any]
    model_state: dict[StrictStr, Tensor]
    classes: list[StrictStr] = Field(min_length=1)
    input_shape: list[StrictInt] = Field(min_length=3, max_length=3)
    normalization: Normalization
    input_profile: Optional[InputProfile] = None
    epoch: Optional[StrictInt] = Field(default=None, ge=0)
    step: Optional[StrictInt] = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _sizes_agree(self):
        if any(n < 1 for n in self.input_shape):
            raise ValueError(f"input_shape {self.input_shape} has a size below 1")
        channels, pixels = self.input_shape[0], self.input_shape[0] * self.input_shape[1] * self.input_shape[2]
        norm = self.normalization
        if len(norm.mean) != channels or len(norm.std) != channels:
            raise ValueError(f"normalization has {len(norm.mean)} means and {len(norm.std)} deviations for "
                             f"{channels} channels")
        if any(s <= 0 for s in norm.std):
            raise ValueError("normalization: a standard deviation is not above 0")
        outputs = [v for k, v in self.model_state.items() if k.endswith("output.weight")]
        if outputs and (outputs[0].dim() != 2 or outputs[0].shape[0] != len(self.classes)):
            raise ValueError(f"{len(self.classes)} class names for an output layer of "
                             f"{tuple(outputs[0].shape)} weights")
        profile = self.input_profile
        if profile is not None and (profile.mean.numel() != pixels or profile.std.numel() != pixels):
            raise ValueError(f"input_profile has {profile.mean.numel()} pixels for images of {pixels}")
        return self


class Streams(_Part):
    torch: Tensor
    data_epoch_start: Tensor
    augment: Tensor


class Best(_Part):
    epoch: Optional[StrictInt] = Field(ge=1)
    val_accuracy: Optional[Number] = None


class Carried(_Part):
    loss_sum: Number
    correct: StrictInt
    seen: StrictInt
    time: Number


class ResumeSection(_Part):
    streams: Streams
    epoch: StrictInt = Field(ge=0)
    batch: StrictInt = Field(ge=0)
    step: StrictInt = Field(ge=0)
    history: list[dict[StrictStr, Any]]
    best: Best
    carried: Carried
    pending: Tensor
    optimizer: dict[str, Any]
    scheduler: Optional[dict[str, Any]]
    scaler: dict[str, Any]

    @model_validator(mode="after")
    def _counts_agree(self):
        if len(self.history) != self.epoch:
            raise ValueError(f"history holds {len(self.history)} epochs, epoch says {self.epoch}")
        if self.best.epoch is not None and self.best.epoch > self.epoch:
            raise ValueError(f"the best epoch {self.best.epoch} is past the {self.epoch} finished")
        return self


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def check_fields(ckpt: dict[str, Any], path) -> None:
    """Refuse, in one line, a checkpoint whose fields are missing or of the wrong kind or size."""
    try:
        Checkpoint.model_validate(ckpt)
    except ValidationError as e:
        raise UserError(f"{path} is not a valid mlp checkpoint ({_problem(e)}); use a checkpoint mlp train "
                        "wrote") from None


def check_resume_section(ckpt: dict[str, Any], path) -> None:
    """Refuse a last.pth whose training state is damaged (its fields, once a format-1 one is upgraded)."""
    try:
        ResumeSection.model_validate(ckpt["resume"])
    except ValidationError as e:
        raise UserError(f"--resume {path}: its training state is damaged ({_problem(e)}); resume from "
                        "another copy, or start a new run") from None
