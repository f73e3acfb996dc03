"""Training-cost benchmark: LoSiA / LoSiA-Pro next to LoRA, DoRA, PiLoRA, GaLore, full fine-tuning and the floor.

Every method trains the same randomly initialized LLaMA-architecture model on the same random token batches, each in
its own subprocess so that peak memory is clean. Per method the report gives microseconds per token for the forward,
backward and optimizer phases (median over the steps after warm-up), peak memory, the number of trainable parameters,
the activation memory the forward pass saves for backward, and whether training changed what it should.

``floor`` is a frozen backbone doing the forward pass and the input-gradient backward pass only (no weight gradient,
no optimizer): the least any method that trains inner layers must pay. ``pilora`` is PiLoRA in its second stage
(dominant rank-r LoRA on the important half of each layer's output neurons, rank-r' LoRA on the rest), where a run
spends most of its steps; its short first stage runs before the measured steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

METHODS = ("floor", "losia_pro", "losia", "lora", "dora", "pilora", "lora_r64", "dora_r64", "galore", "full")


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
    extra: dict[str, Any] = field(default_factory=dict)

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
    """A randomly initialized ``LlamaForCausalLM`` of the benchmark's size, seeded."""
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
    dtype = getattr(torch, spec.dtype)
    model = LlamaForCausalLM(config).to(device=spec.device, dtype=dtype)
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


class Runner:
    """One method set up on one model: ``step(batch)`` returns (forward, backward, optimizer) seconds."""

    def __init__(self, method: str, spec: BenchSpec, gradient_checkpointing: bool) -> None:
        import torch

        self.method, self.spec = method, spec
        self.model = build_model(spec)
        self.optimizer = None
        self.scheduler = None
        self.watch: list[str] = []  # parameter names whose values must change
        self.losia = None
        model = self.model
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method == "floor":
            model.requires_grad_(False)
            # Input gradients all the way down: the backward every method that trains inner layers must run.
            model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
        elif method in ("losia_pro", "losia"):
            from .core import LosiaConfig, LosiaLRScheduler, attach_losia

            config = LosiaConfig(
                rank_factor=spec.rank_factor,
                output_rank_factor=spec.output_rank_factor,
                time_slot=spec.time_slot,
                pro=method == "losia_pro",
            )
            self.optimizer = attach_losia(model, config, lr=1e-4)
            self.scheduler = LosiaLRScheduler(self.optimizer, num_training_steps=10_000, kind="constant")
            self.losia = self.optimizer
            self.watch = ["model.layers.0.mlp.up_proj.weight", "lm_head.weight"]
        elif method.startswith(("lora", "dora")):
            from peft import LoraConfig, get_peft_model

            rank = 64 if method.endswith("_r64") else spec.lora_rank
            config = LoraConfig(
                r=rank,
                lora_alpha=2 * rank,
                lora_dropout=0.0,
                target_modules="all-linear",
                use_dora=method.startswith("dora"),
            )
            self.model = model = get_peft_model(model, config)
            params = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=1e-4)
            self.watch = [n for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n][:4]
        elif method == "pilora":
            self._setup_pilora()
        elif method == "galore":
            self._setup_galore()
        elif method == "full":
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            self.watch = ["model.layers.0.mlp.up_proj.weight", "lm_head.weight"]
        else:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        # Fingerprints, not copies: a copy of the watched weights would add to this method's peak memory.
        self.initial = {n: _fingerprint(p) for n, p in self.model.named_parameters() if n in self.watch}

    def _setup_pilora(self) -> None:
        """PiLoRA in stage 2, where a run spends most of its steps, set up like ``lora`` for a fair comparison.

        Matched to ``lora``: rank r = ``spec.lora_rank`` (stage 1 and the dominant LoRA), alpha 2r, no dropout, every
        linear layer of the decoder layers (peft's "all-linear" minus the output layer, which it excludes), AdamW at
        lr 1e-4. The supplementary rank r' is 2 (the paper: 1 or 2 at r = 32), or 1 below r = 8, where 2 would be a
        quarter of r or more. The dominant group is the top half of each layer's output neurons by hits (the paper's
        ablation rule; a fixed size, so the cost does not depend on the random model's scores). Two stage-1 steps
        score the neurons (``observe`` after each backward pass), then ``enter_stage2`` installs the new adapters and
        the optimizer is rebuilt on them. On CUDA the peak-memory counter restarts after the switch, so that
        ``peak_mem_mb`` is stage 2's; a CPU process's peak resident size cannot be reset and includes stage 1.
        """
        import torch

        from .pilora import PiloraConfig, attach_pilora

        spec, model = self.spec, self.model
        rank = spec.lora_rank
        config = PiloraConfig(
            rank=rank,
            supplementary_rank=2 if rank >= 8 else 1,
            alpha=2 * rank,
            dropout=0.0,
            partition="top_half",
            target_modules="all",
        )
        pilora = attach_pilora(model, config)
        optimizer = torch.optim.AdamW(pilora.trainable_parameters(), lr=1e-4)
        for step, batch in enumerate(batches(spec, 2)):
            model(input_ids=batch, labels=batch).loss.backward()
            pilora.observe(step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        pilora.enter_stage2()
        del optimizer  # it holds the stage-1 factors and their moments
        self.optimizer = torch.optim.AdamW(pilora.trainable_parameters(), lr=1e-4)
        self.watch = [n for n, p in model.named_parameters() if p.requires_grad and n.endswith("dominant_A")][:4]
        if spec.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

    def _setup_galore(self) -> None:
        """Layer-wise GaLore (optimizer step inside backward), rank hidden/8, the output layer trained fully."""
        import torch
        from galore_torch import GaLoreAdamW

        model, spec = self.model, self.spec
        model.requires_grad_(False)
        optimizers = {}
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                param = module.weight
                param.requires_grad_(True)
                optimizers[param] = GaLoreAdamW(
                    [
                        {
                            "params": [param],
                            "rank": spec.hidden_size // 8,
                            "update_proj_gap": 200,
                            "scale": 2.0,
                            "proj_type": "std",
                        }
                    ],
                    lr=1e-4,
                )
        head = model.get_output_embeddings().weight
        head.requires_grad_(True)
        optimizers[head] = torch.optim.AdamW([head], lr=1e-4)

        def hook(param):
            optimizers[param].step()
            optimizers[param].zero_grad()

        for param in optimizers:
            param.register_post_accumulate_grad_hook(hook)
        self.watch = ["model.layers.0.mlp.up_proj.weight", "lm_head.weight"]

    def trainable(self) -> int:
        if self.losia is not None:
            return sum(self.losia.num_trainable().values())
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _sync(self) -> None:
        if self.spec.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def step(self, batch) -> tuple[float, float, float, float]:
        self._sync()
        t0 = time.perf_counter()
        loss = self.model(input_ids=batch, labels=batch).loss
        self._sync()
        t1 = time.perf_counter()
        loss.backward()
        self._sync()
        t2 = time.perf_counter()
        if self.optimizer is None:  # floor; layer-wise GaLore steps inside backward
            return t1 - t0, t2 - t1, 0.0, float(loss.detach())
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._sync()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, float(loss.detach())

    def changed(self) -> bool:
        if not self.watch:
            return True  # floor: nothing is meant to change
        params = dict(self.model.named_parameters())
        return all(_fingerprint(params[n]) != self.initial[n] for n in self.watch)


def _fingerprint(param) -> tuple[float, float]:
    """Two float64 sums (no copy of the tensor) that change when entries of ``param`` change (in practice)."""
    import torch

    flat = param.detach().reshape(-1)
    return float(flat.sum(dtype=torch.float64)), float(flat[::3].sum(dtype=torch.float64))


def saved_activation_bytes(runner: Runner, batch) -> int:
    """Bytes the forward pass keeps for backward (each storage counted once)."""
    import torch

    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = runner.model(input_ids=batch, labels=batch).loss
    loss.backward()
    if runner.optimizer is not None:
        runner.optimizer.zero_grad(set_to_none=True)
    parameters = {p.untyped_storage().data_ptr() for p in runner.model.parameters()}
    return sum(size for ptr, size in seen.items() if ptr not in parameters)


def losia_overheads(runner: Runner, t_step: float, repeats: int = 3) -> dict[str, Any]:
    """Cost of the measuring group's importance work and of a reselection, amortized over a cycle.

    Measured directly, because the difference of two step medians drowns in timing noise on a busy machine: for one
    decoder layer and for the output layer, the extra backward work of a measuring group (the full weight gradient
    instead of the block gradient, on inputs of this benchmark's shape) plus its importance EMA update, and the time
    of one reselection. A cycle has G slots of T steps; each slot measures one group every step and reselects once.
    """
    import torch

    from .core.functional import gather_block
    from .core.importance import ImportanceEMA

    optimizer, spec = runner.losia, runner.spec
    config = optimizer.config
    tokens = spec.tokens
    slot, groups = optimizer.schedule.time_slot, optimizer.schedule.num_groups
    generator = torch.Generator(device=spec.device).manual_seed(0)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            runner._sync()
            start = time.perf_counter()
            fn()
            runner._sync()
            times.append(time.perf_counter() - start)
        return min(times)

    def new_ema(weight):
        return ImportanceEMA(
            weight.shape, config.ema_betas, config.importance, config.torch_importance_dtype, weight.device
        )

    def group_cost(group: int) -> tuple[float, float]:
        extra = 0.0
        for target in optimizer.group_targets[group]:
            weight = target.weight.detach()
            out_f, in_f = weight.shape
            x = torch.randn(tokens, in_f, generator=generator, device=spec.device, dtype=weight.dtype)
            dy = torch.randn(tokens, out_f, generator=generator, device=spec.device, dtype=weight.dtype)
            x_sel = x if target.in_idx is None else x.index_select(1, target.in_idx)
            block = best(lambda: dy.index_select(1, target.out_idx).t().mm(x_sel))  # noqa: B023
            full = best(lambda: gather_block(dy.t().mm(x).float(), target.out_idx, target.in_idx))  # noqa: B023
            grad = dy.t().mm(x).float()
            ema = new_ema(weight)
            update = best(lambda: ema.update(weight, grad.clone(), consume_grad=True)) - best(grad.clone)  # noqa: B023
            extra += max(0.0, full - block) + max(0.0, update)
        # A reselection needs a scored window: give every target of the group EMA buffers, then time it.
        for target in optimizer.group_targets[group]:
            ema = new_ema(target.weight)
            ema.update(target.weight, torch.rand(target.weight.shape, generator=generator, device=spec.device))
            optimizer.importance[target.name] = ema
        runner._sync()
        start = time.perf_counter()
        with torch.no_grad():
            optimizer.reselect(group)
        runner._sync()
        return extra, time.perf_counter() - start

    out: dict[str, Any] = {"time_slot": slot, "groups": groups}
    kinds = {"decoder_layer": 0}
    if optimizer.group_targets[-1][0].num_in is None:
        kinds["output_layer"] = groups - 1
    per_slot = {}
    for kind, group in kinds.items():
        importance, reselect = group_cost(group)
        out[f"importance_ms_per_step_{kind}"] = importance * 1e3
        out[f"reselect_ms_{kind}"] = reselect * 1e3
        per_slot[kind] = importance + reselect / slot
    decoder_slots = groups - (1 if "output_layer" in kinds else 0)
    cycle = decoder_slots * per_slot["decoder_layer"] + per_slot.get("output_layer", 0.0)
    out["overhead_fraction"] = cycle / groups / t_step
    return out


def peak_memory_mb(spec: BenchSpec) -> float:
    """Peak allocated GPU memory, or the peak resident size of this process on CPU."""
    if spec.device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(method: str, spec: BenchSpec, gradient_checkpointing: bool) -> dict[str, Any]:
    """Train ``method`` for ``spec.warmup + spec.steps`` steps in this process and return its figures."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    runner = Runner(method, spec, gradient_checkpointing)
    model_mem = peak_memory_mb(spec)
    data = batches(spec, spec.warmup + spec.steps)
    timings, losses = [], []
    for i, batch in enumerate(data):
        forward, backward, optim, loss = runner.step(batch)
        losses.append(loss)
        if i >= spec.warmup:
            timings.append((forward, backward, optim))
    peak = peak_memory_mb(spec)
    per_token = 1e6 / spec.tokens
    fwd = statistics.median(t[0] for t in timings) * per_token
    bwd = statistics.median(t[1] for t in timings) * per_token
    opt = statistics.median(t[2] for t in timings) * per_token
    total = statistics.median(sum(t) for t in timings) * per_token
    result = {
        "us_per_token": total,
        "forward_us": fwd,
        "backward_us": bwd,
        "optimizer_us": opt,
        "peak_mem_mb": peak,
        "model_mem_mb": model_mem,
        "trainable_params": runner.trainable(),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_finite": all(math.isfinite(v) for v in losses),
        "trained": runner.changed(),
    }
    if not gradient_checkpointing:
        result["saved_activation_mb"] = saved_activation_bytes(runner, data[0]) / 2**20
    if runner.losia is not None:
        result["losia"] = losia_overheads(runner, total * spec.tokens / 1e6)
    return result


# -- driver -------------------------------------------------------------------------------------------------------


def activation_sweep(spec: BenchSpec, rank_factors: list[float]) -> dict[str, float]:
    """Activation memory (MB) saved for backward by LoSiA-Pro at each rank factor.

    Next to it: the plain path, LoRA and the floor (no gradient checkpointing; one forward/backward each, in this
    process).
    """
    data = batches(spec, 1)[0]
    out = {}
    for p in rank_factors:
        out[f"losia_pro p={p:g}"] = (
            saved_activation_bytes(Runner("losia_pro", replace(spec, rank_factor=p), False), data) / 2**20
        )
    for method in ("losia", "lora", "floor"):
        out[method] = saved_activation_bytes(Runner(method, spec, False), data) / 2**20
    return out


def _run_worker(method: str, spec: BenchSpec, gradient_checkpointing: bool) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "losia_factory.bench",
        "--worker",
        method,
        "--spec",
        json.dumps(asdict(spec)),
        "--gradient-checkpointing",
        "on" if gradient_checkpointing else "off",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark of {method} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_name(device: str) -> str:
    """A readable name of the device the benchmark runs on."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def run(
    spec: BenchSpec, methods: list[str], modes: list[bool], progress=print, isolated: bool = True
) -> dict[str, Any]:
    """Benchmark ``methods`` with and/or without gradient checkpointing; returns the JSON report.

    ``isolated`` runs every method in its own subprocess (clean peak memory); otherwise all run in this process,
    which is faster but makes ``peak_mem_mb`` the running peak of the whole process.
    """
    import torch

    report: dict[str, Any] = {
        "device": device_name(spec.device),
        "torch": torch.__version__,
        "threads": spec.threads or torch.get_num_threads(),
        "isolated": isolated,
        "model": {k: v for k, v in asdict(spec).items() if k not in ("extra",)},
        "methods": {},
    }
    probe = build_model(replace(spec, num_layers=1))
    per_layer = sum(p.numel() for n, p in probe.named_parameters() if ".layers." in n)
    outside = sum(p.numel() for n, p in probe.named_parameters() if ".layers." not in n)
    report["model"]["parameters"] = outside + per_layer * spec.num_layers
    del probe
    for gc in modes:
        for method in methods:
            name = method + ("_gc" if gc else "")
            progress(f"  {name:<14} ...", end="", flush=True)
            started = time.time()
            report["methods"][name] = _run_worker(method, spec, gc) if isolated else measure(method, spec, gc)
            result = report["methods"][name]
            progress(
                f" {result['us_per_token']:9.1f} us/token  peak {result['peak_mem_mb']:8.0f} MB  "
                f"({time.time() - started:.0f} s)"
            )
    return report


def ratios(report: dict[str, Any]) -> dict[str, float]:
    """Headline ratios of the targets, and PiLoRA against LoRA, for every gradient-checkpointing setting present."""
    methods = report["methods"]
    out = {}
    for suffix in ("", "_gc"):
        pilora, lora = methods.get("pilora" + suffix), methods.get("lora" + suffix)
        if pilora is not None and lora is not None:
            out[f"pilora{suffix} / lora{suffix} latency"] = pilora["us_per_token"] / lora["us_per_token"]
            out[f"pilora{suffix} / lora{suffix} peak memory"] = pilora["peak_mem_mb"] / lora["peak_mem_mb"]
        pro = methods.get("losia_pro" + suffix)
        if pro is None:
            continue
        for other in ("lora", "floor", "full", "dora", "galore", "losia"):
            ref = methods.get(other + suffix)
            if ref is not None:
                out[f"losia_pro{suffix} / {other}{suffix} latency"] = pro["us_per_token"] / ref["us_per_token"]
        lora = methods.get("lora" + suffix)
        if lora is not None:
            out[f"losia_pro{suffix} / lora{suffix} peak memory"] = pro["peak_mem_mb"] / lora["peak_mem_mb"]
    return out


def markdown_table(report: dict[str, Any]) -> str:
    """The per-method figures as a markdown table."""
    lines = [
        "| method | us/token | forward | backward | optimizer | peak MB | saved act. MB | trainable "
        "| loss first -> last |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in report["methods"].items():
        saved = f"{r['saved_activation_mb']:.1f}" if "saved_activation_mb" in r else "-"
        lines.append(
            f"| {name} | {r['us_per_token']:.1f} | {r['forward_us']:.1f} | {r['backward_us']:.1f} | "
            f"{r['optimizer_us']:.1f} | {r['peak_mem_mb']:.0f} | {saved} | {r['trainable_params']:,} | "
            f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} |"
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """Bar charts of the latency split and peak memory, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["methods"])
    r = report["methods"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    bottom = [0.0] * len(names)
    for key, color in (("forward_us", "#4c72b0"), ("backward_us", "#dd8452"), ("optimizer_us", "#55a868")):
        values = [r[n][key] for n in names]
        ax1.bar(names, values, bottom=bottom, label=key.replace("_us", ""), color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax1.set_ylabel("microseconds per token")
    ax1.set_title("Training latency split")
    ax1.legend()
    ax1.tick_params(axis="x", rotation=60)
    ax2.bar(names, [r[n]["peak_mem_mb"] for n in names], color="#8172b2")
    ax2.set_ylabel("peak memory (MB)")
    ax2.set_title("Peak memory (process RSS on CPU, allocated on GPU)")
    ax2.tick_params(axis="x", rotation=60)
    fig.suptitle(
        f"{report['device']}: LLaMA {report['model']['parameters'] / 1e6:.0f}M, "
        f"{report['model']['batch_size']} x {report['model']['seq_len']} tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def eval_fraction(text: str) -> float:
    """``"1/8"`` or ``"0.125"`` -> 0.125."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/")
        return float(num) / float(den)
    return float(text)


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark (``losia-factory benchmark`` / ``python scripts/benchmark.py``)."""
    parser = argparse.ArgumentParser(prog="losia-factory benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small model and few steps (smoke check, < 60 s)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every method in this process (default with --quick; peak memory is then not per method)",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--gradient-checkpointing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--json", help="write the report as JSON to this path")
    parser.add_argument("--markdown", help="write the table as markdown to this path")
    parser.add_argument("--plot", help="write a bar chart (latency split and memory) to this PNG path")
    parser.add_argument(
        "--activation-sweep",
        default="",
        help="also measure saved activations of LoSiA-Pro at these rank factors, e.g. 1/16,1/8,1/4,1/2",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16")
    for name in (
        "hidden_size",
        "num_layers",
        "intermediate_size",
        "num_heads",
        "num_kv_heads",
        "vocab_size",
        "batch_size",
        "seq_len",
        "steps",
        "warmup",
        "time_slot",
        "threads",
    ):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    for name in ("rank_factor", "output_rank_factor"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None)
    args = parser.parse_args(argv)

    if args.worker:
        spec = BenchSpec(**json.loads(args.spec))
        print(json.dumps(measure(args.worker, spec, args.gradient_checkpointing == "on")))
        return 0

    spec = QUICK if args.quick else BenchSpec()
    overrides = {k: v for k, v in vars(args).items() if k in BenchSpec.__dataclass_fields__ and v is not None}
    spec = replace(spec, **overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.gradient_checkpointing]
    print(
        f"benchmark on {spec.device}: hidden {spec.hidden_size}, {spec.num_layers} layers, vocab {spec.vocab_size}, "
        f"batch {spec.batch_size} x {spec.seq_len}, {spec.steps} measured steps after {spec.warmup}"
    )
    report = run(spec, methods, modes, isolated=not (args.in_process or args.quick))
    report["ratios"] = ratios(report)
    if args.activation_sweep:
        factors = [eval_fraction(x) for x in args.activation_sweep.split(",") if x.strip()]
        report["activation_sweep_mb"] = activation_sweep(spec, factors)
    print()
    print(markdown_table(report))
    print()
    for key, value in report["ratios"].items():
        print(f"{key}: {value:.3f}")
    for key, value in report.get("activation_sweep_mb", {}).items():
        print(f"saved activations, {key}: {value:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(report) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
