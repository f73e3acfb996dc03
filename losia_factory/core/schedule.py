"""The LoSiA timeline as a pure function of the 0-based optimizer step (paper section 3.3, Eq. 8, Fig. 4).

Nothing here holds state: which group measures importance, when it reselects and its rewarm factor are all
computed from the step number, so a resumed run follows exactly the timeline of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MODES


@dataclass(frozen=True)
class LosiaSchedule:
    """When each group measures importance, reselects its subnet and rewarms its learning rate.

    The timeline is cut into slots of ``time_slot`` (T) optimizer steps; slot ``c`` holds steps
    ``[c*T, (c+1)*T)``. With G groups:

    * ``async`` (paper): group ``g`` measures during the slots with ``c % G == g`` and reselects right after the
      last step of each of them, i.e. after step ``s`` with ``(s // T) % G == g`` and ``(s + 1) % T == 0``.
    * ``sync`` (SL ablation): every group measures during the slots with ``c % G == 0`` and all reselect together
      after them, so each subnet is still refreshed once every G*T steps.
    * ``once`` (ReLO ablation): as ``async`` during the first G slots only; afterwards subnets stay fixed.
    * ``fixed``: no group ever measures or reselects.

    Rewarm (Eq. 8): for group ``g`` let ``r`` be the number of steps since its latest reselection (0 on the first
    step after it). If the group has reselected at least once, ``r < T`` and ``step >= warmup_steps``, its
    learning rate is multiplied by ``r / T``; otherwise by 1. With ``rewarm=False`` (WDS ablation) always by 1.

    Args:
        num_groups: Number of groups G (decoder layers, plus one for a trained output layer).
        time_slot: Slot length T in optimizer steps.
        warmup_steps: Steps of the base warm-up; rewarming starts only at ``step >= warmup_steps``.
        mode: ``"async"``, ``"sync"``, ``"once"`` or ``"fixed"``.
        rewarm: Whether reselected groups rewarm (Eq. 8).
    """

    num_groups: int
    time_slot: int
    warmup_steps: int = 0
    mode: str = "async"
    rewarm: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.num_groups, bool) or not isinstance(self.num_groups, int) or self.num_groups < 1:
            raise ValueError(f"num_groups must be an integer >= 1, got {self.num_groups!r}.")
        if isinstance(self.time_slot, bool) or not isinstance(self.time_slot, int) or self.time_slot < 1:
            raise ValueError(f"time_slot must be an integer >= 1, got {self.time_slot!r}.")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")

    @property
    def cycle_length(self) -> int:
        """Steps between two reselections of the same group (G*T)."""
        return self.num_groups * self.time_slot

    def _check(self, step: int, group: int | None = None) -> None:
        if step < 0:
            raise ValueError(f"step must be >= 0 (0-based optimizer step), got {step}.")
        if group is not None and not 0 <= group < self.num_groups:
            raise ValueError(f"group must be in [0, {self.num_groups}), got {group}.")

    def _slot_owner(self, slot: int) -> int | None:
        """The single group that measures during ``slot`` in async/once mode (None when nobody does)."""
        if self.mode == "once" and slot >= self.num_groups:
            return None
        return slot % self.num_groups

    def is_scoring(self, step: int, group: int) -> bool:
        """Whether ``group`` measures importance during optimizer step ``step``."""
        self._check(step, group)
        slot = step // self.time_slot
        if self.mode == "fixed":
            return False
        if self.mode == "sync":
            return slot % self.num_groups == 0
        return self._slot_owner(slot) == group

    def scoring_groups(self, step: int) -> tuple[int, ...]:
        """All groups that measure importance during ``step`` (several only in sync mode)."""
        self._check(step)
        slot = step // self.time_slot
        if self.mode == "fixed":
            return ()
        if self.mode == "sync":
            return tuple(range(self.num_groups)) if slot % self.num_groups == 0 else ()
        owner = self._slot_owner(slot)
        return () if owner is None else (owner,)

    def scoring_group(self, step: int) -> int | None:
        """The one group measuring importance during ``step``, or None (async, once and fixed modes).

        Raises:
            ValueError: in sync mode, where all groups measure together; use :meth:`scoring_groups` there.
        """
        if self.mode == "sync":
            raise ValueError("In sync mode every group measures at once; use scoring_groups(step) instead.")
        groups = self.scoring_groups(step)
        return groups[0] if groups else None

    def is_window_start(self, step: int) -> bool:
        """Whether ``step`` is the first step of a slot (importance buffers start from zero there)."""
        self._check(step)
        return step % self.time_slot == 0

    def reselects_after(self, step: int, group: int) -> bool:
        """Whether ``group`` reselects its subnet right after optimizer step ``step``."""
        return self.is_scoring(step, group) and (step + 1) % self.time_slot == 0

    def _has_reselected_at_slot_start(self, slot: int, group: int) -> bool:
        """Whether ``group`` reselected right before the first step of ``slot``."""
        if slot < 1 or self.mode == "fixed":
            return False
        prev = slot - 1
        if self.mode == "sync":
            return prev % self.num_groups == 0
        return self._slot_owner(prev) == group

    def rewarm_factor(self, step: int, group: int) -> float:
        """Learning-rate multiplier of ``group`` at ``step`` (Eq. 8): ``r / T`` while rewarming, else 1."""
        self._check(step, group)
        if not self.rewarm or step < self.warmup_steps:
            return 1.0
        slot = step // self.time_slot
        # Reselections happen at slot boundaries, so "fewer than T steps since the latest one" means "the
        # reselection happened right before this slot", and r is the position inside the slot.
        if self._has_reselected_at_slot_start(slot, group):
            return (step % self.time_slot) / self.time_slot
        return 1.0
