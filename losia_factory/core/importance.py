"""Parameter importance (paper Eqs. 3-6): per-entry scores and their smoothed, uncertainty-weighted EMA."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .config import IMPORTANCE_KINDS


def sensitivity(weight: torch.Tensor, grad: torch.Tensor, kind: str = "sensitivity") -> torch.Tensor:
    """Per-entry importance of ``weight`` given its loss gradient ``grad``.

    ``kind="sensitivity"`` is the second-order Taylor estimate of Eq. 3 with the Fisher approximation of the
    Hessian diagonal (A.1.2): ``|W*G - (W*G)**2 / 2|``. ``kind="gradient"`` is ``|G|`` (the GL ablation).
    The result is float32 with the shape of ``weight``.
    """
    if kind not in IMPORTANCE_KINDS:
        raise ValueError(f"kind must be one of {IMPORTANCE_KINDS}, got {kind!r}.")
    if weight.shape != grad.shape:
        raise ValueError(f"weight {tuple(weight.shape)} and grad {tuple(grad.shape)} must have the same shape.")
    g = grad.float()
    if kind == "gradient":
        return g.abs()
    wg = weight.float() * g
    return (wg - 0.5 * wg * wg).abs_()


def _importance_in_place(grad: torch.Tensor, weight: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`sensitivity` written into the float32 ``grad`` itself (no allocation)."""
    if kind == "gradient":
        return grad.abs_()
    product = grad.mul_(weight)  # W*G
    return product.addcmul_(product, product, value=-0.5).abs_()  # |W*G - (W*G)^2 / 2|, elementwise in place


class ImportanceEMA:
    """Smoothed importance ``Ibar`` (Eq. 4) and uncertainty ``Ubar`` (Eq. 5) of one weight during one window.

    Buffers start at zero (the start of a measuring window) and are dropped with the object after reselection.
    With ``kind="gradient"`` (the GL ablation) there are no buffers: the paper drops Ibar and Ubar for it, and the
    score is ``|G|`` of the latest update.

    Args:
        shape: Shape of the weight.
        betas: EMA factors (beta1, beta2).
        kind: ``"sensitivity"`` or ``"gradient"``.
        dtype: Storage dtype of the two buffers; arithmetic is done in float32.
        device: Device of the buffers.
    """

    def __init__(
        self,
        shape: torch.Size | tuple[int, ...],
        betas: tuple[float, float],
        kind: str,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.beta1, self.beta2 = betas
        self.kind = kind
        self.ibar: torch.Tensor | None = None
        self.ubar: torch.Tensor | None = None
        self.latest: torch.Tensor | None = None
        if kind != "gradient":
            self.ibar = torch.zeros(shape, dtype=dtype, device=device)
            self.ubar = torch.zeros(shape, dtype=dtype, device=device)
        self.updates = 0

    def update(self, weight: torch.Tensor, grad: torch.Tensor, consume_grad: bool = False) -> None:
        """One step: ``Ibar = b1*Ibar + (1-b1)*I``, then ``Ubar = b2*Ubar + (1-b2)*|I - Ibar|`` (new Ibar).

        With ``consume_grad`` the caller hands over a float32 ``grad`` it no longer needs: the importance is then
        computed inside it and the whole update allocates nothing (with float32 buffers).
        """
        if consume_grad and grad.dtype == torch.float32:
            current = _importance_in_place(grad, weight, self.kind)
        else:
            current = sensitivity(weight, grad, self.kind)
        self.updates += 1
        if self.ibar is None or self.ubar is None:
            self.latest = current
            return
        ibar = self.ibar if self.ibar.dtype == torch.float32 else self.ibar.float()
        ubar = self.ubar if self.ubar.dtype == torch.float32 else self.ubar.float()
        ibar.mul_(self.beta1).add_(current, alpha=1.0 - self.beta1)
        # Eq. 5 uses the deviation from the freshly updated mean (Delta I_i = I_i - Ibar_i).
        deviation = current.sub_(ibar).abs_()
        ubar.mul_(self.beta2).add_(deviation, alpha=1.0 - self.beta2)
        if ibar is not self.ibar:
            self.ibar.copy_(ibar)
            self.ubar.copy_(ubar)

    def score(self) -> torch.Tensor:
        """``s = Ibar * Ubar`` (Eq. 6), float32; ``|G|`` of the latest update for gradient importance."""
        if self.ibar is None or self.ubar is None:
            if self.latest is None:
                raise RuntimeError("gradient importance has no update to score yet")
            return self.latest.float()
        return self.ibar.float() * self.ubar.float()

    def state_dict(self) -> dict[str, torch.Tensor | int | None]:
        return {"ibar": self.ibar, "ubar": self.ubar, "latest": self.latest, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("ibar", "ubar"):
            mine, saved = getattr(self, name), state.get(name)
            if mine is not None and saved is not None:
                mine.copy_(saved)
        if state.get("latest") is not None:
            self.latest = state["latest"].clone()
        self.updates = int(state["updates"])
