"""PiLoRA (parameter-importance-aware LoRA) in pure PyTorch.

Neuron importance from LoRA gradients, then a rank-r LoRA on the dominant neurons and a rank-r' LoRA on the others,
saved as one standard LoRA adapter.
"""

from .config import PARTITIONS, STAGE2_INITS, PiloraConfig, PiloraConfigError
from .importance import HitCounter, approximate_weight_gradient, neuron_scores
from .layer import PiloraLinear
from .model import PiloraAttachment, attach_pilora, find_pilora_attachment, find_pilora_targets
from .partition import dominant_mask

__all__ = [
    "PARTITIONS",
    "STAGE2_INITS",
    "HitCounter",
    "PiloraAttachment",
    "PiloraConfig",
    "PiloraConfigError",
    "PiloraLinear",
    "approximate_weight_gradient",
    "attach_pilora",
    "dominant_mask",
    "find_pilora_attachment",
    "find_pilora_targets",
    "neuron_scores",
]
