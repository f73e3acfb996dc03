"""Measuring methods: one per process for memory, all of one setting in one process, step by step, for time.

Timing noise on a shared machine comes in bursts of seconds, longer than a step. Stepping every method in turn
inside one process (``measure_interleaved``) puts each method's k-th step next to the others' k-th steps, so a
slow burst hits them all alike; the latency columns come from there. Peak memory needs a process of its own per
method (``measure``, run as a subprocess by ``run``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .overheads import losia_overheads
from .runner import Runner, peak_memory_mb, saved_activation_bytes
from .spec import BenchSpec, batches, build_model

TIMING_KEYS = ("us_per_token", "forward_us", "backward_us", "optimizer_us")


def _prepare(spec: BenchSpec) -> None:
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _timing(steps: list[tuple[float, float, float]], tokens: int) -> dict[str, float]:
    """Median microseconds per token of each phase and of the whole step."""
    per_token = 1e6 / tokens
    return {
        "us_per_token": statistics.median(sum(t) for t in steps) * per_token,
        "forward_us": statistics.median(t[0] for t in steps) * per_token,
        "backward_us": statistics.median(t[1] for t in steps) * per_token,
        "optimizer_us": statistics.median(t[2] for t in steps) * per_token,
    }


def add_cycle_average(figures: dict[str, Any], tokens: int) -> None:
    """``cycle_us_per_token``: the typical step plus LoSiA's per-cycle extras (see ``overheads``)."""
    losia = figures.get("losia")
    if losia is not None:
        figures["cycle_us_per_token"] = figures["us_per_token"] + losia["cycle_extra_s"] * 1e6 / tokens


def measure(method: str, spec: BenchSpec, gradient_checkpointing: bool) -> dict[str, Any]:
    """Train ``method`` for ``spec.warmup + spec.steps`` steps in this process and return its figures."""
    _prepare(spec)
    runner = Runner(method, spec, gradient_checkpointing)
    model_mem = peak_memory_mb(spec)
    data = batches(spec, spec.warmup + spec.steps)
    timings, losses = [], []
    for i, batch in enumerate(data):
        forward, backward, optim, loss = runner.step(batch)
        losses.append(loss)
        if i >= spec.warmup:
            timings.append((forward, backward, optim))
    result: dict[str, Any] = {
        **_timing(timings, spec.tokens),
        "peak_mem_mb": peak_memory_mb(spec),
        "model_mem_mb": model_mem,
        "trainable_params": runner.trainable(),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_finite": all(math.isfinite(v) for v in losses),
        "trained": runner.changed(),
        "timing": "own process",
    }
    if not gradient_checkpointing:
        result["saved_activation_mb"] = saved_activation_bytes(runner, data[0]) / 2**20
    if runner.losia is not None:
        result["losia"] = losia_overheads(runner, result["us_per_token"] * spec.tokens / 1e6)
        add_cycle_average(result, spec.tokens)
    return result


def measure_interleaved(methods: list[str], spec: BenchSpec, gradient_checkpointing: bool) -> dict[str, Any]:
    """Latency of ``methods`` stepped in turn in this process: step k of every method, then step k + 1."""
    _prepare(spec)
    runners = {m: Runner(m, spec, gradient_checkpointing) for m in methods}
    steps: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
    for i, batch in enumerate(batches(spec, spec.warmup + spec.steps)):
        for method, runner in runners.items():
            forward, backward, optim, _ = runner.step(batch)
            if i >= spec.warmup:
                steps[method].append((forward, backward, optim))
    return {m: {**_timing(steps[m], spec.tokens), "timing": "interleaved"} for m in methods}


def activation_sweep(spec: BenchSpec, rank_factors: list[float]) -> dict[str, float]:
    """Activation memory (MB) saved for backward by LoSiA-Pro at each rank factor.

    Next to it: the plain path, LoRA and the floor (no gradient checkpointing; one forward/backward each, in this
    process).
    """
    data = batches(spec, 1)[0]
    out = {}
    for p in rank_factors:
        runner = Runner("losia_pro", replace(spec, rank_factor=p), False)
        out[f"losia_pro p={p:g}"] = saved_activation_bytes(runner, data) / 2**20
    for method in ("losia", "lora", "floor"):
        out[method] = saved_activation_bytes(Runner(method, spec, False), data) / 2**20
    return out


class WorkerError(RuntimeError):
    """A benchmark subprocess failed; the message ends with its stderr."""


def _run_worker(args: list[str], spec: BenchSpec, gradient_checkpointing: bool) -> Any:
    cmd = [sys.executable, "-m", "losia_factory.bench", *args, "--spec", json.dumps(asdict(spec))]
    cmd += ["--gradient-checkpointing", "on" if gradient_checkpointing else "off"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise WorkerError(f"benchmark worker {' '.join(args)} failed:\n{out.stderr[-4000:]}")
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
    spec: BenchSpec,
    methods: list[str],
    modes: list[bool],
    progress=print,
    isolated: bool = True,
    interleave: bool = False,
) -> dict[str, Any]:
    """Benchmark ``methods`` with and/or without gradient checkpointing; returns the JSON report.

    Args:
        spec: Model and run settings.
        methods: Method names (see ``methods.METHODS``).
        modes: Gradient checkpointing off (False) and/or on (True).
        progress: ``print``-like callable for progress lines.
        isolated: Run every method in its own subprocess (clean peak memory); otherwise all run in this process,
            which is faster but makes ``peak_mem_mb`` the running peak of the whole process.
        interleave: Take the latency columns from one more run that steps all methods in turn in one process (see
            the module docstring); the per-method runs then still give memory and the LoSiA overheads.

    A method whose run fails (say, a package missing on this machine) is reported under ``"failed"`` with its error,
    and the others go on.
    """
    import torch

    report: dict[str, Any] = {
        "device": device_name(spec.device),
        "torch": torch.__version__,
        "threads": spec.threads or torch.get_num_threads(),
        "isolated": isolated,
        "interleaved": interleave,
        "model": asdict(spec),
        "methods": {},
        "failed": {},
    }
    probe = build_model(replace(spec, num_layers=1, device="cpu"))
    per_layer = sum(p.numel() for n, p in probe.named_parameters() if ".layers." in n)
    outside = sum(p.numel() for n, p in probe.named_parameters() if ".layers." not in n)
    report["model"]["parameters"] = outside + per_layer * spec.num_layers
    del probe
    for gc in modes:
        suffix = "_gc" if gc else ""
        for method in methods:
            name = method + suffix
            progress(f"  {name:<14} ...", end="", flush=True)
            started = time.time()
            try:
                result = _run_worker(["--worker", method], spec, gc) if isolated else measure(method, spec, gc)
            except (WorkerError, ImportError) as err:
                report["failed"][name] = str(err)
                progress(f" failed ({str(err).strip().splitlines()[-1][:160]})")
                continue
            report["methods"][name] = result
            progress(
                f" {result['us_per_token']:9.1f} us/token  peak {result['peak_mem_mb']:8.0f} MB  "
                f"({time.time() - started:.0f} s)"
            )
        ok = [m for m in methods if m + suffix in report["methods"]]
        if interleave and ok:
            progress(f"  interleaved timing of {', '.join(ok)}{' with checkpointing' if gc else ''} ...", flush=True)
            if isolated:
                timings = _run_worker(["--worker-interleaved", ",".join(ok)], spec, gc)
            else:
                timings = measure_interleaved(ok, spec, gc)
            for method, figures in timings.items():
                result = report["methods"][method + suffix]
                result["own_process_us_per_token"] = result["us_per_token"]
                result.update(figures)
                add_cycle_average(result, spec.tokens)
    return report
