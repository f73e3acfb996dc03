"""Training-cost benchmark: LoSiA / LoSiA-Pro next to LoRA, DoRA, PiLoRA, GaLore, full fine-tuning and the floor.

Every method trains the same randomly initialized LLaMA-architecture model on the same random token batches. Per
method the report gives microseconds per token for the forward, backward and optimizer phases (median over the steps
after warm-up), for LoSiA also the average over a whole cycle of reselections, peak memory, the number of trainable
parameters, the activation memory the forward pass saves for backward, and whether training changed what it should.

``floor`` is a frozen backbone doing the forward pass and the input-gradient backward pass only (no weight gradient,
no optimizer): the least any method that trains inner layers must pay. ``pilora`` is PiLoRA in its second stage
(dominant rank-r LoRA on the important half of each layer's output neurons, rank-r' LoRA on the rest), where a run
spends most of its steps; its short first stage runs before the measured steps.

Modules: ``spec`` (sizes, model, data), ``methods`` (one set-up function per method), ``runner`` (stepping and
timing one method), ``overheads`` (LoSiA's importance work and reselections), ``measure`` (per-method and
interleaved runs, subprocesses), ``report`` (ratios, table, chart), ``cli``.
"""

from .cli import main
from .measure import activation_sweep, measure, measure_interleaved, run
from .methods import METHODS, SETUPS, MethodSetup
from .report import latency, markdown_table, plot, ratios
from .runner import Runner, saved_activation_bytes
from .spec import QUICK, BenchSpec, batches, build_model

__all__ = [
    "METHODS",
    "QUICK",
    "SETUPS",
    "BenchSpec",
    "MethodSetup",
    "Runner",
    "activation_sweep",
    "batches",
    "build_model",
    "latency",
    "main",
    "markdown_table",
    "measure",
    "measure_interleaved",
    "plot",
    "ratios",
    "run",
    "saved_activation_bytes",
]
