"""Parameter importance (paper Eqs. 3-6): per-entry scores and their smoothed, uncertainty-weighted EMA."""

from __future__ import annotations

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


class ImportanceEMA:
    """Smoothed importance ``Ibar`` (Eq. 4) and uncertainty ``Ubar`` (Eq. 5) of one weight during one window.

    Buffers start at zero (the start of a measuring window) and are dropped with the object after reselection.

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
        self.ibar = torch.zeros(shape, dtype=dtype, device=device)
        self.ubar = torch.zeros(shape, dtype=dtype, device=device)
        self.updates = 0

    def update(self, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """One step: ``Ibar = b1*Ibar + (1-b1)*I``, then ``Ubar = b2*Ubar + (1-b2)*|I - Ibar|`` (new Ibar)."""
        current = sensitivity(weight, grad, self.kind)
        ibar = self.ibar.float().mul_(self.beta1).add_(current, alpha=1.0 - self.beta1)
        # Eq. 5 uses the deviation from the freshly updated mean (Delta I_i = I_i - Ibar_i).
        deviation = current.sub_(ibar).abs_()
        ubar = self.ubar.float().mul_(self.beta2).add_(deviation, alpha=1.0 - self.beta2)
        if self.ibar.dtype == torch.float32:
            self.ibar, self.ubar = ibar, ubar  # updated in place already
        else:
            self.ibar.copy_(ibar)
            self.ubar.copy_(ubar)
        self.updates += 1

    def score(self) -> torch.Tensor:
        """``s = Ibar * Ubar`` (Eq. 6), float32."""
        return self.ibar.float() * self.ubar.float()

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"ibar": self.ibar, "ubar": self.ubar, "updates": self.updates}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        self.ibar.copy_(state["ibar"])
        self.ubar.copy_(state["ubar"])
        self.updates = int(state["updates"])
