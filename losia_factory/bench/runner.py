"""One method set up on one model, stepped and timed phase by phase."""

from __future__ import annotations

import resource
import time

from .methods import METHODS, SETUPS
from .spec import BenchSpec, build_model


class Runner:
    """One method on its own model: ``step(batch)`` returns (forward, backward, optimizer) seconds and the loss."""

    def __init__(self, method: str, spec: BenchSpec, gradient_checkpointing: bool) -> None:
        if method not in SETUPS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        self.method, self.spec = method, spec
        model = build_model(spec)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        setup = SETUPS[method](model, spec)
        self.model, self.optimizer, self.scheduler = setup.model, setup.optimizer, setup.scheduler
        self.watch, self.losia = setup.watch, setup.losia
        # Fingerprints, not copies: a copy of the watched weights would add to this method's peak memory.
        self.initial = {n: _fingerprint(p) for n, p in self.model.named_parameters() if n in self.watch}

    def trainable(self) -> int:
        if self.losia is not None:
            return sum(self.losia.num_trainable().values())
        from ..pilora import find_pilora_attachment

        pilora = find_pilora_attachment(self.model)
        if pilora is not None:  # the compact count of its stage; its parameters also hold unused (zero) entries
            return pilora.num_trainable()
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def sync(self) -> None:
        """Wait for queued device work, so that host timers measure it."""
        if self.spec.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def step(self, batch) -> tuple[float, float, float, float]:
        self.sync()
        t0 = time.perf_counter()
        loss = self.model(input_ids=batch, labels=batch).loss
        self.sync()
        t1 = time.perf_counter()
        loss.backward()
        self.sync()
        t2 = time.perf_counter()
        if self.optimizer is None:  # floor; layer-wise GaLore steps inside backward
            return t1 - t0, t2 - t1, 0.0, float(loss.detach())
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2, float(loss.detach())

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


def peak_memory_mb(spec: BenchSpec) -> float:
    """Peak allocated GPU memory, or the peak resident size of this process on CPU."""
    if spec.device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
