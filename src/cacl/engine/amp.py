"""Mixed precision for the training step (``train.amp``).

The network's forward pass runs under :func:`torch.autocast`: bfloat16 where the device supports it
(every CPU; CUDA GPUs from Ampere on), float16 otherwise, with a gradient scaler so small float16
gradients do not underflow. The network outputs are cast back to float32 before the losses and the
memory updates, which therefore stay in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch

from cacl.errors import CaclError

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _cuda_bf16_supported() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4 has no including_emulation
        return bool(torch.cuda.is_bf16_supported())


def _grad_scaler(device_type: str) -> Any:
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type)
    if device_type == "cuda":  # torch < 2.3
        return torch.cuda.amp.GradScaler()
    raise CaclError("float16 mixed precision on the CPU needs torch >= 2.3; use bfloat16")


class Precision:
    """How one training step computes: float32, or autocast to ``dtype`` (with a gradient scaler
    for float16).

    Args:
        device: the training device.
        amp: mixed precision on or off (off: every method is the plain float32 step).
        dtype: ``auto`` (bfloat16 where supported, else float16), ``bfloat16`` or ``float16``.
    """

    def __init__(self, device: torch.device, amp: bool = False, dtype: str = "auto") -> None:
        self.device_type = torch.device(device).type
        self.dtype: torch.dtype | None = None
        self.scaler: Any = None
        if not amp:
            return
        if dtype == "auto":
            bf16 = self.device_type != "cuda" or _cuda_bf16_supported()
            dtype = "bfloat16" if bf16 else "float16"
        if dtype not in DTYPES:
            raise CaclError(f"train.amp_dtype must be auto, bfloat16 or float16, got {dtype!r}")
        self.dtype = DTYPES[dtype]
        if self.dtype == torch.float16:
            self.scaler = _grad_scaler(self.device_type)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def describe(self) -> str:
        if self.dtype is None:
            return "float32"
        name = str(self.dtype).removeprefix("torch.")
        return f"autocast {name}" + (" with a gradient scaler" if self.scaler else "")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context for the forward pass (does nothing in float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[torch.nn.Parameter],
        max_grad_norm: float = 0.0,
    ) -> None:
        """Clip (on unscaled gradients) when ``max_grad_norm`` > 0, then step the optimiser. With
        a scaler, a step whose gradients are not finite is skipped and the scale lowered."""
        if self.scaler is not None and max_grad_norm > 0:
            self.scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
