"""What one benchmark trains: the model's shape, the batch and the steps, and the random model and data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BenchSpec:
    """Model and run settings shared by every method of one benchmark."""

    hidden_size: int = 768
    num_layers: int = 12
    intermediate_size: int = 2048
    num_heads: int = 12
    num_kv_heads: int = 12
    vocab_size: int = 32000
    batch_size: int = 4
    seq_len: int = 256
    steps: int = 5
    warmup: int = 2
    rank_factor: float = 0.125
    output_rank_factor: float = 0.125
    time_slot: int = 100
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    seed: int = 0

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def lora_rank(self) -> int:
        """LoRA rank matched to the paper's r = 64 at hidden 4096 (r = hidden / 64)."""
        return max(1, self.hidden_size // 64)


QUICK = BenchSpec(
    hidden_size=128,
    num_layers=2,
    intermediate_size=352,
    num_heads=4,
    num_kv_heads=4,
    vocab_size=2000,
    batch_size=2,
    seq_len=64,
    steps=3,
    warmup=1,
)


def build_model(spec: BenchSpec):
    """A randomly initialized ``LlamaForCausalLM`` of the benchmark's size, seeded, on ``spec.device``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=max(2048, spec.seq_len),
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    # Built where it runs: initializing a 1B model on the host first takes longer than the GPU measurement.
    with torch.device(spec.device):
        model = LlamaForCausalLM(config)
    model = model.to(dtype=getattr(torch, spec.dtype))
    model.config.use_cache = False
    return model


def batches(spec: BenchSpec, count: int):
    """``count`` random token batches, the same for every method."""
    import torch

    generator = torch.Generator().manual_seed(spec.seed + 1)
    return [
        torch.randint(0, spec.vocab_size, (spec.batch_size, spec.seq_len), generator=generator).to(spec.device)
        for _ in range(count)
    ]
