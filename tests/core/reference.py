"""An independent dense reference of LoSiA written straight from the paper, for equivalence tests.

It trains a plain copy of the model with every target weight requiring a full gradient, scores importance with
Eqs. 3-6 by hand, localizes with its own greedy search, and applies AdamW by hand to the masked block. It shares no
code with ``losia_factory.core`` except what the test passes in (the initial random indices).
"""

from __future__ import annotations

import torch


def hand_rewarm(step: int, group: int, groups: int, slot: int, warmup: int) -> float:
    """Eq. 8 for async mode, written from the slot arithmetic."""
    if step < warmup:
        return 1.0
    k = step // slot
    if k >= 1 and (k - 1) % groups == group:
        return (step - k * slot) / slot
    return 1.0


def hand_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.argsort(values, descending=True, stable=True)[:k]).values


def hand_greedy(score: torch.Tensor, n_out: int, n_in: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if n_in is None:
        return hand_topk(score.sum(1), n_out), None
    cand = []
    cols = hand_topk(score.sum(0), n_in)
    rows = hand_topk(score[:, cols].sum(1), n_out)
    cand.append((rows, cols))
    rows2 = hand_topk(score.sum(1), n_out)
    cols2 = hand_topk(score[rows2].sum(0), n_in)
    cand.append((rows2, cols2))
    totals = [score[r][:, c].sum().item() for r, c in cand]
    return cand[1] if totals[1] > totals[0] else cand[0]


class DenseReference:
    """Dense LoSiA on ``model`` (async mode, sensitivity or gradient importance, constant base lr after warm-up).

    A tied output layer needs nothing special here: its weight is the embedding's, so autograd's gradient already
    sums both uses.

    Args:
        model: A copy of the model; its target weights get ``requires_grad`` here.
        targets: ``[(module_name, group, n_out, n_in or None, out_idx, in_idx)]`` with the initial indices; a
            ``group`` of None trains the whole weight with plain AdamW on the base schedule (a dense output layer).
        groups, slot, warmup: The schedule.
        lr_at: ``lr_at(step) -> base learning rate``.
        betas, eps, weight_decay: AdamW.
        ema_betas, kind: Importance settings (``"gradient"``: |G| of the window's last step, no EMA).
        adam_reset: ``"moments"`` (reselection zeroes m and v, the step count goes on) or ``"state"`` (also t = 0).
    """

    def __init__(
        self,
        model,
        targets,
        groups,
        slot,
        warmup,
        lr_at,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        ema_betas=(0.85, 0.85),
        kind="sensitivity",
        adam_reset="moments",
    ) -> None:
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.targets = []
        for name, group, n_out, n_in, out_idx, in_idx in targets:
            weight = model.get_submodule(name).weight
            weight.requires_grad_(True)
            self.targets.append(
                {
                    "name": name,
                    "group": group,
                    "n_out": n_out,
                    "n_in": n_in,
                    "w": weight,
                    "out": out_idx.clone(),
                    "in": None if in_idx is None else in_idx.clone(),
                    "m": None,
                    "v": None,
                    "t": 0,
                    "ibar": None,
                    "ubar": None,
                }
            )
        self.groups, self.slot, self.warmup, self.lr_at = groups, slot, warmup, lr_at
        self.betas, self.eps, self.wd = betas, eps, weight_decay
        self.ema_betas, self.kind, self.adam_reset = ema_betas, kind, adam_reset
        self.step_count = 0

    def _mask(self, t, full):
        rows = full[t["out"]]
        return rows if t["in"] is None else rows[:, t["in"]]

    def step(self, loss_fn) -> None:
        """``loss_fn(model)`` returns the loss (possibly summed over micro-batches by the caller)."""
        for t in self.targets:
            t["w"].grad = None
        loss_fn(self.model)
        s = self.step_count
        scoring = (s // self.slot) % self.groups
        b1, b2 = self.ema_betas
        with torch.no_grad():
            for t in self.targets:
                grad = t["w"].grad.detach().clone()
                if t["group"] == scoring and self.kind == "gradient":
                    t["ibar"], t["ubar"] = grad.abs(), torch.ones_like(grad)  # the last step's |G| wins
                elif t["group"] == scoring:
                    if s % self.slot == 0:
                        t["ibar"] = torch.zeros_like(grad)
                        t["ubar"] = torch.zeros_like(grad)
                    wg = t["w"] * grad
                    imp = (wg - 0.5 * wg**2).abs()
                    t["ibar"] = b1 * t["ibar"] + (1 - b1) * imp
                    t["ubar"] = b2 * t["ubar"] + (1 - b2) * (imp - t["ibar"]).abs()
                g = grad if t["group"] is None else self._mask(t, grad)
                if t["m"] is None:
                    t["m"], t["v"] = torch.zeros_like(g), torch.zeros_like(g)
                t["t"] += 1
                lr = self.lr_at(s)
                if t["group"] is not None:
                    lr *= hand_rewarm(s, t["group"], self.groups, self.slot, self.warmup)
                beta1, beta2 = self.betas
                t["m"] = beta1 * t["m"] + (1 - beta1) * g
                t["v"] = beta2 * t["v"] + (1 - beta2) * g * g
                mhat = t["m"] / (1 - beta1 ** t["t"])
                vhat = t["v"] / (1 - beta2 ** t["t"])
                block = t["w"].detach() if t["group"] is None else self._mask(t, t["w"].detach())
                block = block * (1 - lr * self.wd) - lr * mhat / (vhat.sqrt() + self.eps)
                if t["group"] is None:
                    t["w"].copy_(block)
                elif t["in"] is None:
                    t["w"][t["out"]] = block
                else:
                    t["w"][t["out"][:, None], t["in"][None, :]] = block
            for t in self.targets:
                if t["group"] == scoring and (s + 1) % self.slot == 0:
                    score = t["ibar"] * t["ubar"]
                    t["out"], t["in"] = hand_greedy(score, t["n_out"], t["n_in"])
                    t["m"] = t["v"] = t["ibar"] = t["ubar"] = None
                    if self.adam_reset == "state":
                        t["t"] = 0
        self.step_count += 1


def constant_after_warmup(lr: float, warmup: int):
    return lambda s: lr * (s / warmup if s < warmup else 1.0)


def max_abs_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))
