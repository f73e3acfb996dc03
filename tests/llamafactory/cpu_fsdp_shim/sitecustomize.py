"""Test-only shim, put on PYTHONPATH for the FSDP runs on CPU: accelerate 1.11 applies FSDP on CPU processes too.

accelerate 1.11 turns an FSDP plugin into ``DistributedType.FSDP`` only for accelerator devices (``state.py``,
``AcceleratorState.__init__``: the branch for MULTI_GPU, MULTI_NPU, ... ; MULTI_CPU goes to the IPEX branch), so on
CPU the plugin is dropped without a word and the Trainer runs plain DDP. torch's FSDP2 (``fully_shard``) itself runs
on CPU with gloo, so the tests let accelerate take its FSDP path there; on GPUs nothing is needed.
"""

import accelerate.state as _state
from accelerate.utils import DistributedType

_init = _state.AcceleratorState.__init__


def _init_cpu_fsdp(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin") or self.__dict__.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin
        _state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


_state.AcceleratorState.__init__ = _init_cpu_fsdp
