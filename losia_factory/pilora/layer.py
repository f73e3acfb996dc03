"""A PiLoRA linear layer: a standard LoRA in stage 1, dominant + supplementary LoRAs in stage 2 (Eq. 10).

Torch layout: the base weight ``W0`` is (out, in); its output neurons are rows. The layer owns two parameters for the
whole run, ``lora_A`` (r + r', in) and ``lora_B`` (out, r + r'): the same tensors in both stages, so an optimizer,
a DDP wrapper or a checkpoint built at the start stays valid after the stage switch.

* Stage 1 trains a rank-r LoRA on ``lora_A[:r]`` and ``lora_B[:, :r]`` (the other entries are unused).
* Stage 2: ``A_d = lora_A[:r]`` with ``B_d = lora_B[M, :r]`` on the dominant rows M, ``A_s = lora_A[r:]`` with
  ``B_s = lora_B[~M, r:]`` on the others. The forward pass gathers the compact ``B_d`` (|M|, r) and ``B_s``
  (out - |M|, r') and scatters their outputs into the dominant / supplementary output positions with ``index_add``
  instead of multiplying full-size masked matrices, so

    h = W0 x + s * (M (x) B_d) A_d x + s * (~M (x) B_s) A_s x          (Eq. 10, s = alpha / r)

  costs two small LoRA products per token, like a LoRA of rank r + r' would. Entries outside the compact blocks get
  zero gradients and stay zero, so ``lora_B`` is exactly the exported LoRA of rank r + r' (up to the scaling).
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
        device = base.weight.device
        lora_a = torch.zeros(rank + supplementary_rank, in_features, device=device)
        lora_a[:rank] = _kaiming(rank, in_features, generator, base.weight)
        self.lora_A = nn.Parameter(lora_a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank + supplementary_rank, device=device))
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
        r = self.rank
        if self.stage == 1:
            return y + self._lora(h, self.lora_A[:r], self.lora_B[:, :r]).to(y.dtype)
        dominant_b = self.lora_B.index_select(0, self.dominant_idx)[:, :r]
        supplementary_b = self.lora_B.index_select(0, self.supplementary_idx)[:, r:]
        y = y.index_add(-1, self.dominant_idx, self._lora(h, self.lora_A[:r], dominant_b).to(y.dtype))
        return y.index_add(-1, self.supplementary_idx, self._lora(h, self.lora_A[r:], supplementary_b).to(y.dtype))

    def _lora(self, h: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(h.to(lora_a.dtype), lora_a), lora_b) * self.scaling

    # -- the compact factors (views or gathered copies; the parameters are lora_A and lora_B) -------------------------

    def factors(self) -> dict[str, torch.Tensor]:
        """The LoRA factors of the stage, detached: ``A``, ``B`` (stage 1) or ``A_d``, ``B_d``, ``A_s``, ``B_s``."""
        a, b, r = self.lora_A.detach(), self.lora_B.detach(), self.rank
        if self.stage == 1:
            return {"A": a[:r], "B": b[:, :r]}
        return {"A_d": a[:r], "B_d": b[self.dominant_idx, :r], "A_s": a[r:], "B_s": b[self.supplementary_idx, r:]}

    # -- stage 1 ----------------------------------------------------------------------------------------------------

    def approximate_gradient(self) -> torch.Tensor | None:
        """Eq. 7 from the current stage-1 factors and their gradients (None before any backward pass)."""
        if self.stage != 1:
            raise RuntimeError("the approximate weight gradient is a stage-1 quantity")
        if self.lora_A.grad is None or self.lora_B.grad is None:
            return None
        r = self.rank
        # The LoRA update is s * B A, so dL/dA and dL/dB carry the factor s; Eq. 7 has it too and a common scale
        # does not change which neurons are above the mean.
        return approximate_weight_gradient(
            self.lora_A[:r], self.lora_B[:, :r], self.lora_A.grad[:r], self.lora_B.grad[:, :r]
        )

    # -- stage 2 ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def enter_stage2(self, mask: torch.Tensor, init: str, generator: torch.Generator) -> None:
        """Switch to the dominant (rows ``mask``) and supplementary (the other rows) LoRAs, in the same parameters.

        The values of ``lora_A`` and ``lora_B`` are rewritten in place; their optimizer state must be dropped by the
        caller (the new LoRAs start with fresh Adam moments, as new parameters would).

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
        r = self.rank
        a, b = self.lora_A, self.lora_B
        if init == "fresh":
            a[:r] = _kaiming(r, self.in_features, generator, a)
            a[r:] = _kaiming(self.supplementary_rank, self.in_features, generator, a)
            b.zero_()
        elif init == "carry":
            a_s, b_s = _best_low_rank(b[supplementary, :r] @ a[:r], self.supplementary_rank)
            b[supplementary, :r] = 0.0
            b[:, r:] = 0.0
            b[supplementary, r:] = b_s
            a[r:] = a_s
        else:
            raise ValueError(f"unknown stage-2 init {init!r}")
        self.set_partition(dominant, supplementary)

    def set_partition(self, dominant: torch.Tensor, supplementary: torch.Tensor | None = None) -> None:
        """Enter stage 2 with the given dominant output neurons, leaving the parameter values as they are.

        :meth:`enter_stage2` calls it after writing the stage-2 initialization; a resumed run calls it with the saved
        indices before loading the saved values.
        """
        device = self.lora_A.device
        dominant = dominant.to(device=device, dtype=torch.int64)
        if supplementary is None:
            keep = torch.ones(self.out_features, dtype=torch.bool, device=device)
            keep[dominant] = False
            supplementary = keep.nonzero().squeeze(1)
        self.register_buffer("dominant_idx", dominant, persistent=False)
        self.register_buffer("supplementary_idx", supplementary.to(device=device, dtype=torch.int64), persistent=False)
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
        factors = self.factors()
        if self.stage == 1:
            return factors["A"].clone(), factors["B"] * self.scaling
        lora_a = self.lora_A.detach().clone()
        lora_b = torch.zeros(self.out_features, self.rank + self.supplementary_rank, device=lora_a.device)
        lora_b[self.dominant_idx, : self.rank] = factors["B_d"] * self.scaling
        lora_b[self.supplementary_idx, self.rank :] = factors["B_s"] * self.scaling
        return lora_a, lora_b

    def delta_weight(self) -> torch.Tensor:
        """The weight update ``Delta W`` (out, in) of Eq. 11, in fp32."""
        lora_a, lora_b = self.lora_factors()
        return lora_b @ lora_a

    def num_trainable(self) -> int:
        """Trainable elements of the stage: r(in + out) in stage 1; r in + |M| r + r' in + (out - |M|) r' in stage 2.

        The parameters themselves hold (r + r')(in + out) elements; the others are unused and stay zero.
        """
        r, r_s, n_in, n_out = self.rank, self.supplementary_rank, self.in_features, self.out_features
        if self.stage == 1:
            return r * (n_in + n_out)
        dominant = int(self.dominant_idx.numel())
        return r * n_in + dominant * r + r_s * n_in + (n_out - dominant) * r_s


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
