"""Keeping NaN and Inf out of the trained state: one fused finiteness check per step, and the count of skipped steps.

A non-finite loss, an overflow in the forward pass or a broken sample gives NaN or Inf gradients; gradient clipping
does not remove them (a NaN total norm makes every clipped gradient NaN). A step that saw one must not touch the
weights, fp32 masters, Adam moments or importance buffers: the optimizer checks everything it is about to use with
:func:`all_finite` and, when the check fails, skips the whole step. :class:`NonFiniteGuard` counts the skipped steps
and stops the run with :class:`NonFiniteStepsError` after too many in a row, because a run whose every step is
skipped makes no progress.

Cost: :func:`all_finite` is one sum per tensor, one ``stack`` and one ``isfinite``, then a single device-to-host copy
of one boolean. That sync is the only one added per step (the Trainer's gradient clipping already syncs once for its
norm); the sums read every checked gradient once (on CPU about 1 ms for the blocks of a 110M-parameter LLaMA, 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

ADVICE = (
    "Lower the learning rate or enable gradient clipping (max_grad_norm), check the data for broken or empty samples, "
    "use bf16 or fp32 instead of fp16 if activations overflow, or raise {option} to tolerate longer bursts."
)


class NonFiniteStepsError(RuntimeError):
    """Too many consecutive optimizer steps were skipped because their gradients held NaN or Inf."""


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether no tensor holds a NaN or an infinity (``None`` entries are ignored).

    One sum per tensor, stacked, then one ``isfinite`` and one host sync for the whole list: a NaN makes its sum NaN,
    an infinity makes it infinite or NaN. Finite tensors whose sum exceeds the float range (about 3e38) count as
    non-finite too; a gradient of that size is an overflow in all but name. Sums are the cheapest full reduction on
    CPU (the blocks of a LLaMA-110M: 1 ms, against 6 ms for ``_foreach_norm`` with the 2-norm, which overflows
    sooner, and 140 ms with the max-norm).
    """
    sums = [t.detach().sum().float() for t in tensors if t is not None and t.numel() > 0]
    if not sums:
        return True
    return bool(torch.isfinite(torch.stack(sums)).all())


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor | None]]) -> list[str]:
    """The names whose tensor holds NaN or Inf: the diagnosis after :func:`all_finite` failed (one sync each)."""
    return [name for name, t in named if t is not None and t.numel() > 0 and not bool(torch.isfinite(t).all())]


@dataclass
class NonFiniteGuard:
    """Counts optimizer steps skipped for non-finite values; raises at the ``limit``-th skipped step in a row.

    Args:
        limit: How many skipped steps in a row stop the run (>= 1).
        option: The name of the setting that holds ``limit``, for the error message.
    """

    limit: int
    option: str = "max_consecutive_nonfinite_steps"
    skipped: int = 0
    consecutive: int = 0

    def passed(self) -> None:
        """A step with finite values ran: the run of skipped steps is over."""
        self.consecutive = 0

    def skip(self, step: int, sources: Sequence[str]) -> None:
        """Count a skipped step (0-based ``step``; ``sources``: what held NaN/Inf); raise at the limit."""
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.limit:
            raise NonFiniteStepsError(
                f"{self.consecutive} consecutive optimizer steps (the last: step {step + 1}) had NaN or Inf in "
                f"{', '.join(sources) or 'their gradients'} ({self.option}: {self.limit}). Each of them was "
                "skipped, so the weights, optimizer state and importance buffers hold no NaN, but the run is not "
                "learning. " + ADVICE.format(option=self.option)
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        state = state or {}
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))
