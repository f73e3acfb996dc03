"""Test-only shim, put on PYTHONPATH for the multi-process resume runs on CPU.

transformers 5.6 resumes a multi-process run with ``torch.load(..., map_location=args.device)``; on CPU that device
is ``cpu:0``, a location ``torch.load`` cannot restore ("don't know how to restore data location ... cpu:0"), so
stock full fine-tuning fails the same way. On GPUs the device is ``cuda:N`` and nothing is needed.
"""

import torch.serialization

_restore = torch.serialization.default_restore_location


def _restore_cpu_index(storage, location):
    return _restore(storage, "cpu" if location.startswith("cpu:") else location)


torch.serialization.default_restore_location = _restore_cpu_index
