"""What a builder needs to know about its inputs, read from the processed data's info.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlzoo.records import DataInfo


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]  # one sample, without the batch dimension
    dtype: str
    scale: float | None = None  # raw pixels -> [0, 1]: the model rescales its own inputs
    vocab_size: int | None = None  # token ids are below this
    padding: str | None = None  # token ids: "pre" or "post" (where the padding ids sit)

    @classmethod
    def from_info(cls, info: DataInfo) -> InputSpec:
        train = info.splits["train"]
        return cls(
            shape=tuple(train.x_shape[1:]),
            dtype="int32" if train.x_dtype.startswith("int") else "float32",
            scale=getattr(info.input, "scale", None),
            vocab_size=getattr(info.input, "vocab_size", None),
            padding=getattr(info.input, "padding", None),
        )
