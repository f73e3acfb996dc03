"""LosiaAdamW: AdamW on the subnet blocks, plus importance measurement, reselection and write-back.

One optimizer step at 0-based step ``s`` (Algorithm 2 of the paper, with the schedule of :class:`LosiaSchedule`):

1. every target of a group measuring during ``s`` updates its importance EMA from the full weight gradient summed
   over the step's micro-batches (Eqs. 3-6); the EMA starts from zero on the first step of the window;
2. AdamW (decoupled weight decay) updates the fp32 blocks and the extra fully-trained parameters, with the
   per-group learning rates set by :class:`~.lr_scheduler.LosiaLRScheduler` (rewarm, Eq. 8);
3. every block is written back into its backbone weight;
4. groups whose window ends at ``s`` localize a new subnet (Algorithm 1), take its values from the backbone, reset
   their Adam moments and step count, and drop their importance buffers;
5. the groups measuring during ``s + 1`` start collecting full gradients.

In data-parallel runs the importance gradients of step 1 are averaged over the ranks first (see
:mod:`.distributed`), and the indices are checked to agree after step 4.

Before step 1, one fused check (:mod:`.nonfinite`) looks for NaN or Inf in the block, extra and importance gradients.
If it finds any, steps 1-3 are skipped (nothing is written anywhere), steps 4-5 still run so the timeline stays on
the Trainer's clock, and the step is counted; too many skipped steps in a row raise
:class:`~.nonfinite.NonFiniteStepsError`.

Under DeepSpeed ZeRO stage 1/2 the engine owns the fp32 masters and Adam moments of the blocks and calls ``step``
once per param group on flat partitions of them. :meth:`LosiaAdamW.bind_engine_masters` switches the optimizer to
that arrangement: ``step`` then only runs AdamW, and the driver calls :meth:`LosiaAdamW.finish_step` after each
engine step (when the updated blocks are back in the model) for steps 1 and 3-5, which read and write the masters
through the engine's API.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from .config import LosiaConfig
from .distributed import average_across_ranks, check_same_indices, data_parallel_size
from .importance import ImportanceEMA
from .nonfinite import NonFiniteGuard, all_finite, nonfinite_names
from .partitioned import assign, full_numel, full_shape, full_values, is_partitioned
from .schedule import LosiaSchedule
from .selection import select_block, top_indices
from .sharded import is_sharded
from .subnet import SubnetTarget

if TYPE_CHECKING:
    from .attach import LosiaLayout

STATE_VERSION = 1


class EngineMasters(Protocol):
    """Access to fp32 master blocks that a training engine keeps outside the model (DeepSpeed ZeRO 1/2).

    Both calls are made on every rank in the same order; ``get`` may be a collective.
    """

    def get(self, block: torch.Tensor) -> torch.Tensor:
        """The full fp32 master value of a block parameter."""

    def set(self, block: torch.Tensor, value: torch.Tensor) -> None:
        """Overwrite the fp32 master of a block parameter (``value``: the full block, the same on all ranks)."""

    def flat_params(self, optimizer: LosiaAdamW, group: int) -> list[torch.Tensor]:
        """The tensors the engine keys the Adam state of LoSiA group ``group`` by (its flat fp32 partitions)."""


class LosiaAdamW(torch.optim.AdamW):
    """AdamW over LoSiA subnet blocks (one param group per LoSiA group) and extra fully-trained parameters.

    Built by :func:`~.attach.attach_losia`; use it like any optimizer (``loss.backward(); opt.step();
    opt.zero_grad()``). Param group 0 (``"name": "extra"``, ``"losia_group": None``) holds the fully trained
    parameters, possibly none, and follows the base schedule; group ``1 + g`` holds the blocks of LoSiA group ``g``
    (``"losia_group": g``, ``"name"``: the common module prefix, e.g. ``model.layers.3`` or ``lm_head``).

    Args:
        targets: The subnet targets, each with its group index.
        num_groups: Number of LoSiA groups G.
        config: The LoSiA configuration.
        extra_params: Parameters trained fully (may be empty).
        lr: Base learning rate.
        betas: Adam's (beta1, beta2) (not the importance EMA factors).
        eps: Adam's epsilon.
        weight_decay: Decoupled weight decay.
        generator: The generator that drew the initial subnets (its state is saved for completeness).
        layout: The model layout the targets came from (names of the groups and of the extra parameters), kept for
            reports such as ``losia_config.json``; None when the optimizer is built by hand from targets.
    """

    def __init__(
        self,
        targets: Sequence[SubnetTarget],
        num_groups: int,
        config: LosiaConfig,
        extra_params: Sequence[nn.Parameter] = (),
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        generator: torch.Generator | None = None,
        layout: LosiaLayout | None = None,
    ) -> None:
        self.targets = list(targets)
        self.config = config
        self.schedule = LosiaSchedule(num_groups, config.time_slot, 0, config.mode, config.rewarm)
        self.group_targets: list[list[SubnetTarget]] = [[] for _ in range(num_groups)]
        for target in self.targets:
            self.group_targets[target.group].append(target)
        if any(not members for members in self.group_targets):
            raise ValueError("every LoSiA group needs at least one target layer")
        # Param group 0 holds the fully trained extras (possibly none) and always follows the base schedule, so
        # loggers that read the first group's learning rate (transformers' "learning_rate") show the base curve.
        param_groups: list[dict[str, Any]] = [{"params": list(extra_params), "losia_group": None, "name": "extra"}]
        param_groups += [
            {"params": [t.block for t in members], "losia_group": g, "name": _group_name(members)}
            for g, members in enumerate(self.group_targets)
        ]
        # foreach: one batched kernel per group instead of a Python loop over ~7 blocks per layer (torch only
        # picks it by itself on accelerators; on CPU it roughly halves the step).
        super().__init__(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)
        self.global_step = 0
        self.last_reselected: tuple[int, ...] = ()
        self.importance: dict[str, ImportanceEMA] = {}
        self.generator = generator
        self.layout = layout
        self._rewarm_scheduler_attached = False
        self._warned_no_rewarm = False
        self.engine_masters: EngineMasters | None = None
        # Set when an FSDP checkpoint restored the Adam state without LoSiA's own (see load_state_dict).
        self.losia_state_pending = False
        self.nonfinite = NonFiniteGuard(config.max_consecutive_nonfinite_steps)
        # What held NaN/Inf in the latest step, empty when it ran normally (the callback logs it).
        self.last_nonfinite: tuple[str, ...] = ()
        self._arm(0)

    # -- the step -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One LoSiA step (see the module docstring); only AdamW once an engine owns the masters.

        A step whose block, extra or importance gradients hold NaN or Inf is skipped whole (see :meth:`_skip`).
        """
        if self.engine_masters is not None:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._warn_if_no_rewarm()
        self.last_nonfinite = ()
        step = self.global_step
        scoring, measured = self._collect_importance_grads(step)
        gradients = [p.grad for group in self.param_groups for p in group["params"]]
        if not all_finite(gradients + [grad for _, grad in measured]):
            self._skip(step, measured)
            self._after_update(scoring, write_back=False)  # the blocks did not change
            return loss
        self.nonfinite.passed()
        self._fold_importance(step, measured)
        super().step()
        self._after_update(scoring)
        return loss

    @torch.no_grad()
    def finish_step(self) -> None:
        """The LoSiA part of a step when an engine ran AdamW: importance, write-back, reselection, next window.

        Call it on every rank once after each engine optimizer step (``LosiaCallback`` does so in the Trainer). The
        engine has already updated the masters, so only the importance gradients are guarded here: non-finite ones
        are not folded into the EMA and the step is counted as skipped.
        """
        if self.engine_masters is None:
            raise RuntimeError("finish_step() is for engine-owned masters; without them step() does all the work.")
        self._warn_if_no_rewarm()
        self.last_nonfinite = ()
        step = self.global_step
        scoring, measured = self._collect_importance_grads(step)
        if not all_finite(grad for _, grad in measured):
            self._skip(step, measured)
            self._after_update(scoring)  # the engine has updated the blocks: write them back as usual
            return
        self.nonfinite.passed()
        self._fold_importance(step, measured)
        self._after_update(scoring)

    def _skip(self, step: int, measured: Sequence[tuple[SubnetTarget, torch.Tensor]]) -> None:
        """Record that step ``step`` is skipped: nothing is written into blocks, weights, Adam state or importance.

        The caller then runs :meth:`_after_update`: the timeline still advances, as after a step with a zero update.
        The Trainer counts the step and steps the learning-rate scheduler whatever the optimizer did, and rewarm (from
        the scheduler's step) and windows (from ``global_step``) must stay on the same clock, also across a resume. A
        window that ends here reselects from the importance it collected on its other steps. Every rank takes the
        same decision: the block gradients are reduced by DDP and the importance gradients by
        :func:`~.distributed.average_across_ranks` before the check.
        """
        named = [(f"gradient of {t.name} (block)", t.block.grad) for t in self.targets]
        extras = [p for group in self.param_groups if group.get("losia_group") is None for p in group["params"]]
        named += [(f"gradient of extra parameter #{i}", p.grad) for i, p in enumerate(extras)]
        named += [(f"importance gradient of {t.name}", grad) for t, grad in measured]
        self.last_nonfinite = tuple(nonfinite_names(named))
        self.nonfinite.skip(step, self.last_nonfinite)

    def bind_engine_masters(self, masters: EngineMasters) -> None:
        """Hand the fp32 masters and Adam moments to an engine (see the module docstring)."""
        self.engine_masters = masters

    def _after_update(self, scoring: Sequence[int], write_back: bool = True) -> None:
        step = self.global_step
        if write_back:
            # Under ZeRO-3 one all-gather of all blocks (a few % of the model); otherwise the blocks themselves.
            for target, block in zip(self.targets, full_values([t.block for t in self.targets])):
                target.write_back(block)
        self.last_reselected = tuple(g for g in scoring if self.schedule.reselects_after(step, g))
        for group in self.last_reselected:
            self.reselect(group)
        if self.last_reselected:
            check_same_indices(
                [
                    (f"{t.name}.{kind}", idx)
                    for g in self.last_reselected
                    for t in self.group_targets[g]
                    for kind, idx in (("out_idx", t.out_idx), ("in_idx", t.in_idx))
                    if idx is not None
                ]
            )
        self.global_step = step + 1
        self._arm(self.global_step)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear parameter gradients and any full gradients collected for importance."""
        super().zero_grad(set_to_none=set_to_none)
        for target in self.targets:
            if target.sink is not None:
                target.sink.take()

    def _measured_groups(self, step: int) -> tuple[int, ...]:
        """The groups that need the full weight gradient of ``step``.

        Sensitivity importance smooths over the whole window (Eqs. 4-5). Gradient importance (the GL ablation) keeps
        no buffers: the score is |G| of the window's last step, so only that step's gradient is collected.
        """
        scoring = self.schedule.scoring_groups(step)
        if self.config.importance == "gradient":
            return tuple(g for g in scoring if self.schedule.reselects_after(step, g))
        return scoring

    def _arm(self, step: int) -> None:
        """Let the groups measuring at ``step`` collect full weight gradients; the others stop."""
        scoring = set(self._measured_groups(step))
        for target in self.targets:
            target.set_measuring(target.group in scoring)

    def _collect_importance_grads(self, step: int) -> tuple[tuple[int, ...], list[tuple[SubnetTarget, torch.Tensor]]]:
        """The measuring groups of ``step`` and their targets' full gradients of the step, averaged over ranks."""
        scoring = self._measured_groups(step)
        distributed = data_parallel_size() > 1
        measured = []
        for group in scoring:
            for target in self.group_targets[group]:
                grad = target.sink.take() if target.sink is not None else None
                if grad is None:
                    if not distributed:
                        continue  # the layer took no part in this step's forward pass
                    # Another rank may have a gradient: contribute zeros, as DDP does for an unused parameter.
                    grad = torch.zeros(full_shape(target.weight), dtype=torch.float32, device=target.weight.device)
                measured.append((target, grad))
        # The gradient of the global batch: every rank then scores the same matrix and picks the same subnet.
        average_across_ranks([grad for _, grad in measured])
        return scoring, measured

    def _fold_importance(self, step: int, measured: Sequence[tuple[SubnetTarget, torch.Tensor]]) -> None:
        """Fold the gradients collected during ``step`` into the EMAs of their targets."""
        fresh = self.schedule.is_window_start(step) or self.config.importance == "gradient"
        # Sensitivity reads W (Eq. 3): under ZeRO-3 the measuring group's weights are gathered, one layer per step.
        weights = full_values([t.weight for t, _ in measured])
        for (target, grad), weight in zip(measured, weights):
            ema = self.importance.get(target.name)
            if ema is None or fresh:
                ema = ImportanceEMA(
                    weight.shape,
                    self.config.ema_betas,
                    self.config.importance,
                    dtype=self.config.torch_importance_dtype,
                    device=grad.device,
                )
                self.importance[target.name] = ema
            ema.update(weight, grad, consume_grad=True)  # the summed gradient is ours and used up here
        del weights

    def reselect(self, group: int) -> None:
        """Localize a new subnet for every target of ``group`` from its importance buffers (Algorithm 1).

        The new block takes its values from the backbone, its Adam state is reset (``config.adam_reset``) and the
        buffers are dropped. Targets without buffers (no gradient in the window) keep their subnet. The optimizer
        calls this itself when a group's window ends; benchmarks call it to time one reselection.
        """
        masters = self.engine_masters
        for target in self.group_targets[group]:
            ema = self.importance.pop(target.name, None)
            if ema is None:
                continue  # never received a gradient in its window: keep the current subnet
            score = ema.score()
            del ema
            if target.num_in is None:
                out_idx, in_idx = top_indices(score.sum(dim=1), target.num_out), None
            else:
                out_idx, in_idx = select_block(score, target.num_out, target.num_in, self.config.selection)
            del score
            if masters is None:
                target.move_to(out_idx, in_idx)
                self._reset_adam_state(target.block)
            else:
                old_master = masters.get(target.block)
                weight = full_values([target.weight])[0]  # ZeRO-3: the new block's values come from the whole weight
                masters.set(target.block, target.move_to(out_idx, in_idx, old_master=old_master, weight=weight))
        if masters is not None:
            # The engine steps flat fp32 partitions, one Adam state (moments and step count) for a whole param
            # group: reset it in place, as the engine keeps views of these tensors.
            for param in masters.flat_params(self, group):
                self._reset_adam_state(param)

    def _reset_adam_state(self, param: torch.Tensor) -> None:
        """Fresh Adam state for a relocated block (Algorithm 2, line 34), as ``config.adam_reset`` says.

        "moments" zeroes the moments and keeps the step count: the first updates on the new block then use the bias
        correction of the step reached (the authors' code). "state" also restarts the step count.
        """
        state = self.state.get(param)
        if not state:
            return
        for key, value in state.items():
            if torch.is_tensor(value) and (key != "step" or self.config.adam_reset == "state"):
                value.zero_()
            elif key == "step" and self.config.adam_reset == "state":
                state[key] = 0

    def _warn_if_no_rewarm(self) -> None:
        if (
            self._rewarm_scheduler_attached
            or self._warned_no_rewarm
            or self.config.mode == "fixed"
            or not self.config.rewarm
        ):
            return
        self._warned_no_rewarm = True
        warnings.warn(
            "LosiaAdamW is stepped without a LosiaLRScheduler, so learning rates are not rewarmed after reselection "
            "(paper Eq. 8). Build one with LosiaLRScheduler(optimizer, num_training_steps=..., warmup_steps=...).",
            stacklevel=3,
        )

    def seek(self, step: int) -> None:
        """Place the optimizer at 0-based optimizer step ``step`` of the timeline without training up to it.

        For benchmarks and tests that need a particular slot, say a decoder layer measuring rather than the output
        layer. Importance collected so far is dropped; indices, masters and Adam state stay as they are. A run that
        continues from a checkpoint restores its step with :meth:`load_state_dict` instead.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0 (0-based optimizer step), got {step!r}.")
        self.importance = {}
        for target in self.targets:
            if target.sink is not None:
                target.sink.take()
        self.global_step = step
        self._arm(step)

    def register_rewarm_scheduler(self) -> None:
        """Record that a :class:`~.lr_scheduler.LosiaLRScheduler` sets the group rates (silences the warning)."""
        self._rewarm_scheduler_attached = True

    # -- reporting ------------------------------------------------------------------------------------------------

    def param_group_of(self, group: int) -> dict[str, Any]:
        """The param group of LoSiA group ``group``.

        That is ``param_groups[1 + group]``, unless an engine dropped the empty "extra" group (DeepSpeed does).
        """
        for param_group in self.param_groups:
            if param_group.get("losia_group") == group:
                return param_group
        raise KeyError(f"no param group for LoSiA group {group}")

    def group_name(self, group: int) -> str:
        """Name of LoSiA group ``group``."""
        return self.param_group_of(group)["name"]

    def num_trainable(self) -> dict[str, int]:
        """Trainable element counts: ``{"subnet": ..., "extra": ...}``."""
        subnet = sum(full_numel(t.block) for t in self.targets)
        extra = sum(p.numel() for g in self.param_groups if g["losia_group"] is None for p in g["params"])
        return {"subnet": subnet, "extra": extra}

    # -- checkpointing --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """AdamW's state dict plus a ``"losia"`` entry: step, indices, fp32 masters, importance buffers, RNG."""
        state = super().state_dict()
        state["losia"] = self.losia_state_dict()
        return state

    def losia_state_dict(self) -> dict[str, Any]:
        """The ``"losia"`` entry of :meth:`state_dict`: step, indices, fp32 masters, importance buffers, RNG.

        DeepSpeed ZeRO 1/2 (non-elastic checkpoints) saves and loads the client optimizer through ``state_dict`` and
        ``load_state_dict``, so this entry travels inside its checkpoints too.
        """
        return {
            "version": STATE_VERSION,
            "step": self.global_step,
            "config": self.config.to_dict(),
            "targets": [
                {
                    "name": t.name,
                    "group": t.group,
                    "out_idx": t.out_idx,
                    "in_idx": t.in_idx,
                    "master": self._master_value(t),
                }
                for t in self.targets
            ],
            "importance": {name: ema.state_dict() for name, ema in self.importance.items()},
            "rng": None if self.generator is None else self.generator.get_state(),
            "nonfinite": self.nonfinite.state_dict(),
        }

    def _master_value(self, target: SubnetTarget) -> torch.Tensor:
        """The block's master for a checkpoint: under ZeRO-3 the engine's fp32 value (a collective on every rank)."""
        if is_partitioned(target.block) and self.engine_masters is not None:
            return self.engine_masters.get(target.block)
        return full_values([target.block])[0]  # FSDP2: the whole block from every rank's rows

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` into an optimizer attached to the same model layout."""
        state_dict = dict(state_dict)
        losia = state_dict.pop("losia", None)
        if losia is None and any(is_sharded(t.block) for t in self.targets):
            # FSDP loads optimizers through torch.distributed.checkpoint, which keeps only "state" and
            # "param_groups"; LoSiA's entry comes from its own file (losia_factory.hf.fsdp_state), which the
            # trainer must load next: until then the indices, masters and importance are not the checkpoint's.
            super().load_state_dict(state_dict)
            self.losia_state_pending = True
            return
        if losia is None:
            raise ValueError("This optimizer state has no 'losia' entry: it was not saved by LosiaAdamW.")
        self._check_layout(losia)
        super().load_state_dict(state_dict)
        self.load_losia_state_dict(losia)

    @torch.no_grad()
    def load_losia_state_dict(self, losia: dict[str, Any]) -> None:
        """Restore a :meth:`losia_state_dict` entry (indices, masters, importance, RNG, step).

        Under DeepSpeed the engine restores its own fp32 partitions right after this call; the block parameters
        get the saved values (the engine's low-precision copies) meanwhile.
        """
        self._check_layout(losia)
        for target, saved in zip(self.targets, losia["targets"]):
            target.out_idx.copy_(saved["out_idx"])
            if target.in_idx is not None:
                target.in_idx.copy_(saved["in_idx"])
            if not is_partitioned(target.block):  # ZeRO-3 restores its partitions of the block itself
                assign(target.block, saved["master"])
            target.write_back(saved["master"])
        self.importance = {}
        by_name = {t.name: t for t in self.targets}
        for name, saved in losia["importance"].items():
            target = by_name[name]
            ema = ImportanceEMA(
                full_shape(target.weight),
                self.config.ema_betas,
                self.config.importance,
                dtype=self.config.torch_importance_dtype,
                device=target.weight.device,
            )
            ema.load_state_dict(saved)
            self.importance[name] = ema
        if self.generator is not None and losia.get("rng") is not None:
            self.generator.set_state(losia["rng"])
        self.nonfinite.load_state_dict(losia.get("nonfinite"))  # absent in states saved before the guard existed
        self.global_step = int(losia["step"])
        self._arm(self.global_step)

    def _check_layout(self, losia: dict[str, Any]) -> None:
        if losia.get("version") != STATE_VERSION:
            raise ValueError(f"Unsupported LoSiA state version {losia.get('version')!r} (expected {STATE_VERSION}).")
        saved_names = [t["name"] for t in losia["targets"]]
        names = [t.name for t in self.targets]
        if saved_names != names:
            first = next((a, b) for a, b in itertools.zip_longest(saved_names, names) if a != b)
            raise ValueError(
                "The saved LoSiA state covers different layers than this optimizer "
                f"({len(saved_names)} saved vs {len(names)} now; first difference (saved, now): {first}). Attach "
                "LoSiA with the same model, target_modules and output_rank_factor as the saved run."
            )
        for target, saved in zip(self.targets, losia["targets"]):
            shape = tuple(saved["master"].shape)
            if shape != tuple(target.block_shape):
                raise ValueError(
                    f"{target.name}: saved block shape {shape} differs from {tuple(target.block_shape)}; the rank "
                    "factors differ from the saved run."
                )


def _group_name(members: Sequence[SubnetTarget]) -> str:
    """The longest dotted prefix shared by a group's module names (``model.layers.3``; ``lm_head`` alone)."""
    parts = [t.name.split(".") for t in members]
    common = []
    for pieces in zip(*parts):
        if any(p != pieces[0] for p in pieces):
            break
        common.append(pieces[0])
    return ".".join(common) or members[0].name
