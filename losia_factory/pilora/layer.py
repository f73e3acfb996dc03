"""A PiLoRA linear layer: a standard LoRA in stage 1, dominant + supplementary LoRAs in stage 2 (Eq. 10).

Torch layout: the base weight ``W0`` is (out, in); its output neurons are rows. Stage 2 keeps the adapters compact,
``B_d`` (|M|, r) and ``B_s`` (out - |M|, r'), and scatters their outputs into the dominant / supplementary output
positions with ``index_add`` instead of multiplying full-size masked matrices, so

    h = W0 x + s * (M (x) B_d) A_d x + s * (~M (x) B_s) A_s x          (Eq. 10, s = alpha / r)

costs two small LoRA products per token, like a LoRA of rank r + r' would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .importance import approximate_weight_gradient


def _kaiming(rows: int, cols: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # The usual LoRA initialization of A: Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)).
    bound = 1.0 / math.sqrt(cols)
    values = torch.rand(rows, cols, generator=generator, dtype=torch.float32) * 2 * bound - bound
    return values.to(device=like.device)


class PiloraLinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` (``base_layer``) with PiLoRA's adapters (fp32 parameters).

    Args:
        base: The linear layer; its weight and bias are frozen.
        rank: r.
        supplementary_rank: r'.
        scaling: alpha / r, for both LoRAs.
        dropout: Dropout on the adapters' input.
        generator: Source of the initial ``A`` (CPU generator).
    """

    # Stage-2 buffers, declared so their type is known (nn.Module types attributes it looks up as Tensor | Module).
    dominant_idx: torch.Tensor
    supplementary_idx: torch.Tensor

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        supplementary_rank: int,
        scaling: float,
        dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.base_layer = base
        for param in base.parameters():
            param.requires_grad_(False)
        self.rank = rank
        self.supplementary_rank = supplementary_rank
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        out_features, in_features = base.weight.shape
        self.lora_A = nn.Parameter(_kaiming(rank, in_features, generator, base.weight))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=base.weight.device))
        self.stage = 1

    @property
    def out_features(self) -> int:
        return self.base_layer.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.base_layer.weight.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        h = self.lora_dropout(x)
        if self.stage == 1:
            return y + self._lora(h, self.lora_A, self.lora_B).to(y.dtype)
        y = y.index_add(-1, self.dominant_idx, self._lora(h, self.dominant_A, self.dominant_B).to(y.dtype))
        return y.index_add(
            -1, self.supplementary_idx, self._lora(h, self.supplementary_A, self.supplementary_B).to(y.dtype)
        )

    def _lora(self, h: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(h.to(lora_a.dtype), lora_a), lora_b) * self.scaling

    # -- stage 1 ----------------------------------------------------------------------------------------------------

    def approximate_gradient(self) -> torch.Tensor | None:
        """Eq. 7 from the current stage-1 factors and their gradients (None before any backward pass)."""
        if self.stage != 1:
            raise RuntimeError("the approximate weight gradient is a stage-1 quantity")
        if self.lora_A.grad is None or self.lora_B.grad is None:
            return None
        # The LoRA update is s * B A, so dL/dA and dL/dB carry the factor s; Eq. 7 has it too and a common scale
        # does not change which neurons are above the mean.
        return approximate_weight_gradient(self.lora_A, self.lora_B, self.lora_A.grad, self.lora_B.grad)

    # -- stage 2 ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def enter_stage2(self, mask: torch.Tensor, init: str, generator: torch.Generator) -> None:
        """Replace the stage-1 LoRA by the dominant (rows ``mask``) and supplementary (the other rows) LoRAs.

        Args:
            mask: Boolean (out,) mask of dominant output neurons.
            init: "fresh" (new factors: A random, B zero, so the layer starts again at W0) or "carry" (the dominant
                rows keep stage 1's update exactly; the other rows get its best rank-r' approximation).
            generator: Source of the new ``A`` factors for "fresh".
        """
        if self.stage != 1:
            raise RuntimeError("enter_stage2() was already called")
        if mask.shape != (self.out_features,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape ({self.out_features},)")
        device = self.lora_A.device
        mask = mask.to(device)
        dominant = mask.nonzero().squeeze(1)
        supplementary = (~mask).nonzero().squeeze(1)
        if init == "fresh":
            a_d = _kaiming(self.rank, self.in_features, generator, self.lora_A)
            b_d = torch.zeros(dominant.numel(), self.rank, device=device)
            a_s = _kaiming(self.supplementary_rank, self.in_features, generator, self.lora_A)
            b_s = torch.zeros(supplementary.numel(), self.supplementary_rank, device=device)
        elif init == "carry":
            a_d, b_d = self.lora_A.detach().clone(), self.lora_B.detach()[dominant].clone()
            a_s, b_s = _best_low_rank(
                self.lora_B.detach()[supplementary] @ self.lora_A.detach(), self.supplementary_rank
            )
        else:
            raise ValueError(f"unknown stage-2 init {init!r}")
        del self.lora_A, self.lora_B
        self.register_buffer("dominant_idx", dominant, persistent=False)
        self.register_buffer("supplementary_idx", supplementary, persistent=False)
        self.dominant_A, self.dominant_B = nn.Parameter(a_d), nn.Parameter(b_d)
        self.supplementary_A, self.supplementary_B = nn.Parameter(a_s), nn.Parameter(b_s)
        self.stage = 2

    @property
    def dominant_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.out_features, dtype=torch.bool, device=self.dominant_idx.device)
        mask[self.dominant_idx] = True
        return mask

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` of one standard LoRA with ``B @ A`` equal to this layer's update, scaling folded into ``B``.

        Stage 2: rank r + r', ``A = [A_d; A_s]`` and ``B = [s (M (x) B_d), s (~M (x) B_s)]`` (zero rows outside each
        group's mask). Stage 1: ``(A, s B)``.
        """
        if self.stage == 1:
            return self.lora_A.detach().clone(), self.lora_B.detach() * self.scaling
        lora_a = torch.cat([self.dominant_A.detach(), self.supplementary_A.detach()])
        lora_b = torch.zeros(self.out_features, self.rank + self.supplementary_rank, device=lora_a.device)
        lora_b[self.dominant_idx, : self.rank] = self.dominant_B.detach() * self.scaling
        lora_b[self.supplementary_idx, self.rank :] = self.supplementary_B.detach() * self.scaling
        return lora_a, lora_b

    def delta_weight(self) -> torch.Tensor:
        """The weight update ``Delta W`` (out, in) of Eq. 11, in fp32."""
        lora_a, lora_b = self.lora_factors()
        return lora_b @ lora_a

    def num_trainable(self) -> int:
        """Trainable elements: r(in + out) in stage 1; r in + |M| r + r' in + (out - |M|) r' in stage 2."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _best_low_rank(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B @ A`` the best rank-``rank`` approximation of ``matrix`` (truncated SVD, balanced)."""
    rows, cols = matrix.shape
    if rows == 0:
        return torch.zeros(rank, cols, device=matrix.device), torch.zeros(0, rank, device=matrix.device)
    u, s, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    lora_a = torch.zeros(rank, cols, device=matrix.device)
    lora_b = torch.zeros(rows, rank, device=matrix.device)
    lora_a[:keep] = root.unsqueeze(1) * vh[:keep]
    lora_b[:, :keep] = u[:, :keep] * root.unsqueeze(0)
    return lora_a, lora_b
